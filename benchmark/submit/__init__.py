"""Third-party submissions: the sandbox, its confinement, admission and evaluation of a submission, and the
submissions leaderboard (docs/SUBMITTING.md).

Submitted code runs only in a limited child process. The trusted side (driver, pool workers, attack processes)
never imports a submission: it registers *proxy* defenses (:mod:`~privbench.submit.proxies`) whose ``build`` /
``transform`` / ``mask_generator`` / ``public_info`` forward to a :class:`~privbench.submit.session.Session`, a
fresh child per request that imported the submission and nothing else of the run (:mod:`~privbench.submit.child`).

A child is confined before anything of it runs: :mod:`~privbench.submit.confine`, a single-threaded bootstrap,
enters new namespaces and a private root of read-only binds, sets the resource limits, drops every capability,
applies Landlock and a seccomp filter, and only then execs the child's interpreter. What a child may read is
:func:`~privbench.submit.view.readable_roots` (system directories, the interpreter, the project's packages and the
submission, minus the public datasets and the machine's secrets); it writes only in its own temporary directory.
Each request and its reply have a wall-time limit; past it the child's process group is killed. Seeds and
generator states a child sees are keyed by the run key (:mod:`privbench.core.keys`). docs/SUBMITTING.md has the
threat model, including what stays open (timing side channels, the disk beyond one file's size limit). Run
submissions of unknown authors in a disposable VM or container, as an unprivileged user without network; this
sandbox is the second layer.

Requests and replies are length-framed JSON headers plus tensors in the safetensors format
(:mod:`~privbench.submit.protocol`), over two pipes that are not the child's stdout/stderr. Nothing is ever
unpickled: a malformed reply is an error, not a code path. Everything the child reports is validated again on the
trusted side (:mod:`~privbench.submit.proxies`).

Modules, in import order: ``protocol`` (frames, limits, errors) ← ``view`` (what a child reads) ← ``filters``
(Landlock, seccomp) ← ``confine`` (the bootstrap) ← ``session`` ← ``child``, ``proxies`` ← ``leaderboard``, ``submission`` (admission and the run).
"""
