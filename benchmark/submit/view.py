"""What a sandbox child may read of the file system (:func:`readable_roots`): system directories, the
interpreter's prefixes and site-packages, the project's packages and the submission, minus the public datasets and
the machine's secrets (:func:`denied_paths`); and whether this machine can confine a child at all
(:func:`filesystem_isolation`)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from privbench.core.paths import checkout_root, package_dirs


def filesystem_isolation() -> Optional[str]:
    """``None`` when a child can be confined here (Landlock and seccomp: :mod:`privbench.submit.confine`), else why not.
    Without them a submission is refused unless the caller allows running it unconfined."""
    from privbench.submit.confine import landlock_abi

    if not sys.platform.startswith("linux"):
        return f"Landlock and seccomp are Linux-only (platform {sys.platform})"
    abi = landlock_abi()
    if abi < 1:
        return "Landlock is unavailable in this kernel (Linux >= 5.13 with landlock among the LSMs)"
    try:
        import pyseccomp  # noqa: F401 - only its presence (and libseccomp's) is checked here
    except (ImportError, RuntimeError) as e:
        return f"seccomp is unavailable ({type(e).__name__}: {e}); pip install pyseccomp, apt-get install libseccomp2"
    return None



#: System directories a child may read (and execute from), besides Python's prefixes and the project's packages;
#: :func:`denied_paths` are cut out of them. No /dev: :data:`privbench.submit.confine.DEVICES` only.
#: No procfs but /proc/cpuinfo (torch reads it): per-process counters such as the major page faults of
#: /proc/self/stat tell which pages of a file an earlier child cached.
_SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt", "/proc/cpuinfo",
                "/sys/devices/system/cpu")
#: Secrets of the machine under the system directories.
_SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/ssh", "/etc/ssl/private",
            "/etc/sudoers", "/etc/sudoers.d", "/etc/security/opasswd")


def denied_paths() -> list[str]:
    """What a child never reads even inside a readable directory: every public dataset's files (a child holding
    the public data could match its private images to dataset indices: :func:`privbench.data.data_paths`) and the
    machine's secrets."""
    from privbench.data import data_paths

    return sorted({*data_paths(), *_SECRETS})


@dataclass(frozen=True)
class ChildView:
    """What a sandbox child sees of the file system (:func:`readable_roots`): ``read``, disjoint trees it may read;
    ``listed``, directories carved around a denied entry (their other entries are in ``read``); ``links``, the
    symbolic links among and inside them, ``(path, target)``, recreated as links in the child's root."""

    read: tuple[str, ...]
    listed: tuple[str, ...]
    links: tuple[tuple[str, str], ...]


def _carve(root: str, denied: list[str], view: dict[str, set]) -> None:
    """Add ``root`` to ``view``: the root itself when nothing denied lies inside, else its entries, each carved in
    turn, with ``root`` among the listed directories. Symbolic links are kept as links, never followed (a rule or a
    bind mount on one would cover its target)."""
    if os.path.islink(root):
        view["links"].add((root, os.readlink(root)))
        return
    inside = [d for d in denied if d == root or d.startswith(root.rstrip("/") + "/")]
    if not inside:
        view["read"].add(root)
        return
    if root in inside or not os.path.isdir(root):
        return
    view["listed"].add(root)
    for entry in sorted(os.listdir(root)):
        _carve(os.path.join(root, entry), inside, view)


def readable_roots(source: Path) -> ChildView:
    """What a child may read: system directories, the interpreter's prefixes and site-packages, the project's own
    packages (``benchmark``, ``defenses``, ``attacks``: not the rest of the checkout, where results and held-out
    files may live) and the submission itself, minus :func:`denied_paths`. Not ``/home``, ``/root`` outside the
    interpreter, ``/tmp``, ``/var``, ``/dev`` or the run's output."""
    import site

    root = checkout_root()
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), *_SYSTEM_READ,
             *(str(p) for p in package_dirs()), str(Path(source).resolve())}
    denied = [os.path.realpath(d) for d in denied_paths() if os.path.lexists(d)]
    view: dict[str, set] = {"read": set(), "listed": set(), "links": set()}
    for r in sorted(roots):
        if os.path.lexists(r):
            if os.path.islink(r):  # e.g. /lib -> usr/lib: the link, and what it names
                view["links"].add((r, os.readlink(r)))
            _carve(os.path.realpath(r), denied, view)
    view["listed"].add(str(root))  # its names, so the child imports the project from here (not its files)
    read = sorted(view["read"])
    disjoint = [p for i, p in enumerate(read) if not any(p.startswith(q.rstrip("/") + "/") for q in read[:i])]
    def inside(p: str) -> bool:
        return any(p == q or p.startswith(q.rstrip("/") + "/") for q in disjoint)
    return ChildView(tuple(disjoint), tuple(sorted(p for p in view["listed"] if not inside(p))),
                     tuple(sorted((p, t) for p, t in view["links"] if not inside(os.path.dirname(p)))))


def readable_by_child(path: str | Path) -> bool:
    """Whether a sandbox child could read ``path`` or anything beneath it, now or once it is created: it lies in
    or contains one of :func:`readable_roots` (for any submission placed elsewhere), or would be a new entry of a
    directory that is carved around a denied path (whose other entries are readable)."""
    p = os.path.realpath(path)
    view = readable_roots(Path("/nonexistent-submission"))
    read, listed = view.read, view.listed
    if any(p == r or p.startswith(r.rstrip("/") + "/") or r.startswith(p.rstrip("/") + "/") for r in read):
        return True
    first = Path(p)
    while not first.exists() and first != first.parent:
        first = first.parent
    return str(first) != p and str(first) in set(listed)


def seccomp_path() -> list[str]:
    """Where ``pyseccomp`` lives, for the bootstrap (which runs without site packages)."""
    import importlib.util

    spec = importlib.util.find_spec("pyseccomp")
    return [str(Path(spec.origin).parent)] if spec is not None and spec.origin else []
