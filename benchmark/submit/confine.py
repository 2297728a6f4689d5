"""Confinement of a sandbox child: applied to a fresh, single-threaded interpreter, which then execs the child.

Landlock, ``no_new_privs``, capabilities and seccomp filters bind the calling *thread* and what it starts
afterwards, so they must hold before any other thread exists. :mod:`privbench.submit.session` therefore never confines a
live interpreter: it starts ``python -I -S benchmark/submit/confine.py SPEC`` (run by path, so nothing of the project,
torch or the site packages is imported; only the standard library and ``pyseccomp``), which confines itself with
one thread and then execs the real child interpreter. Everything below is inherited across ``execve`` and by
every thread and process the child creates. In order:

1. **Namespaces** (root, or where unprivileged user namespaces work): new PID, IPC, network, mount and UTS
   namespaces. This process forks PID 1 of the new namespace, which forks the child; each waits and ends the way
   the child ended (so its limits' signals are reported). When PID 1 ends the kernel kills every process left in
   the namespace and the IPC namespace, with any SysV shared memory, is freed. The network namespace has no
   interface but a downed loopback.
2. **A private root** (:func:`enter_root`, with the mount namespace): a fresh tmpfs holding read-only bind mounts
   (recursively read-only) of what the child may read, read-only binds of the three devices (still writable as
   devices, but no ACL or attribute of theirs can change), its own directory and ``/proc/cpuinfo``, entered with
   ``pivot_root``: no procfs, whose per-process counters (major faults) read which pages an earlier child cached. Nothing else exists for the child: the run's output, /tmp, pathname sockets of other
   services (tmux, a multiprocessing forkserver), the public datasets cannot be read, stat-ed, watched or reached.
3. **Resource limits**: address space, CPU seconds, largest file, no core dumps.
4. **Capabilities**: securebits locked (root gains nothing at ``execve``), the bounding and ambient sets cleared,
   then effective, permitted and inheritable sets cleared with ``capset``; then ``PR_SET_NO_NEW_PRIVS``.
5. **Landlock** (ABI 1..7), the same view again (a second layer, and the first where no private root could be
   built): reads of ``spec["read"]`` only (system directories minus data and secrets, the interpreter, the
   project's packages, the submission); ``/dev/null``, ``/dev/zero`` and ``/dev/urandom`` and no other device;
   writes beneath ``spec["write"]`` only, never device nodes; no TCP bind or connect (ABI 4); no signals to, or
   abstract Unix sockets of, processes outside the sandbox (ABI 6).
6. **seccomp** (libseccomp through ``pyseccomp``), denying with ``EPERM``
   (:data:`~privbench.submit.filters.DENIED_SYSCALLS`): new processes
   (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``; ``clone3`` reports ``ENOSYS`` so libc falls back to
   ``clone``), so every limit is the whole sandbox's; ``socket``/``connect``/``bind`` (only connected stream
   socket pairs); ``ptrace`` and cross-process memory access; mounts, ``unshare``/``setns`` and namespace
   flags; ``bpf``, ``perf_event_open``, key rings, SysV IPC and POSIX queues; ``setsid``/``setpgid``; ``mknod``;
   ``chmod``/``chown``/``utime``/extended attributes, inode-flag and verity ``ioctl`` requests, leases and dnotify
   (Landlock does not cover metadata, and a root child owns every system file); ``inotify``/``fanotify``;
   ``mincore``, ``cachestat``, ``fadvise64``, ``preadv2``/``pwritev2``, page-evicting ``madvise``, ``getrusage``
   and Linux AIO (the page cache of files every child reads was an error-free store between children); ``flock``
   and ``fcntl`` record locks (a channel between concurrent children); ``fallocate`` with a mode
   (``FALLOC_FL_KEEP_SIZE`` reserves disk past ``RLIMIT_FSIZE``);
   ``io_uring`` (its operations bypass seccomp); fscrypt key and policy ``ioctl`` requests; kernel
   administration (modules, ``kexec``, ``reboot``, swap, ``iopl``, ``syslog``, clocks, ...); and, with ``ENOSYS``,
   every system call newer than this list's review
   (:data:`~privbench.submit.filters.FIRST_UNREVIEWED_SYSCALL`: ``setxattrat`` of Linux 6.13 wrote ACLs).
   System calls of another architecture kill the process.

Layers 5 and 6 live in :mod:`~privbench.submit.filters`, which this file loads by path. If a layer that
``spec["require"]`` names cannot be applied, the bootstrap prints why and exits with status
:data:`REFUSED` before anything of the child runs.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import sys

#: Exit status of a bootstrap that could not apply a required layer (its reason is on stderr).
REFUSED = 97

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_NOATIME = 0x1, 0x2, 0x4, 0x8, 0x20, 0x400
_MS_BIND, _MS_REC, _MS_PRIVATE, _MNT_DETACH = 0x1000, 0x4000, 0x40000, 0x2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)
_SYS_MOUNT_SETATTR, _AT_FDCWD, _AT_RECURSIVE = 442, -100, 0x8000
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _MOUNT_ATTR_NOATIME = 0x1, 0x2, 0x4, 0x10
_MOUNT_ATTR__ATIME = 0x70

_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_SET_NO_NEW_PRIVS = 1, 24, 28, 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
#: NOROOT, NO_SETUID_FIXUP, KEEP_CAPS and NO_CAP_AMBIENT_RAISE, each with its lock bit.
_SECUREBITS = 0b11111111
_CAPABILITY_VERSION_3 = 0x20080522


def _sibling(name: str):
    """The module ``name`` of this package: imported normally, or (run by path in ``python -I -S``, where the
    package is not importable) compiled from the source file beside this one: never from a cached ``.pyc``, which an
    unconfined child (``--allow-unconfined``) could have planted, and writing none."""
    if __package__:
        import importlib
        return importlib.import_module(f"{__package__}.{name}")
    import types

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    module = types.ModuleType(f"privbench_confine_{name}")
    module.__file__ = path
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), module.__dict__)  # noqa: S102 - the project's own file, by path
    return module


_filters = _sibling("filters")
Refused, _libc, _check, _pyseccomp = _filters.Refused, _filters._libc, _filters._check, _filters._pyseccomp
apply_landlock, apply_seccomp, landlock_abi = _filters.apply_landlock, _filters.apply_seccomp, _filters.landlock_abi
DEVICES, DENIED_SYSCALLS = _filters.DEVICES, _filters.DENIED_SYSCALLS


# ----------------------------------------------------------------------------------------------------- namespaces


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(libc: ctypes.CDLL) -> str:
    """Unshare PID, IPC, network, mount and UTS namespaces (inside a new user namespace unless root). Returns
    which were entered ("" when none could be: the caller keeps the process-group and seccomp guarantees)."""
    f = _filters
    flags = f._CLONE_NEWPID | f._CLONE_NEWIPC | f._CLONE_NEWNET | f._CLONE_NEWNS | f._CLONE_NEWUTS
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        flags |= f._CLONE_NEWUSER
    if libc.unshare(ctypes.c_int(flags)) != 0:
        return ""
    if uid != 0:  # map ourselves to ourselves: no root inside, only the namespace's own capabilities
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    return "pid,ipc,net,mnt,uts" + (",user" if uid != 0 else "")


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    def enc(x: str | None) -> bytes | None:
        return None if x is None else x.encode()
    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def _read_only(libc: ctypes.CDLL, target: str, remount: int) -> None:
    """Make the bind at ``target`` and every mount beneath it read-only, nosuid, nodev, noatime
    (``mount_setattr`` with ``AT_RECURSIVE``, Linux >= 5.12; a remount of the top mount only before that)."""
    attr = _MountAttr(_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOATIME,
                      _MOUNT_ATTR__ATIME, 0, 0)
    r = libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), target.encode(),
                     ctypes.c_uint(_AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if r != 0:
        if ctypes.get_errno() != errno.ENOSYS:
            _check(r, f"mount_setattr {target}")
        _mount(libc, None, target, None, remount)


def _mountpoint(path: str, directory: bool) -> None:
    if directory:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def enter_root(libc: ctypes.CDLL, spec: dict) -> None:
    """Make the mount namespace's root a fresh tmpfs holding only what the child may see, then ``pivot_root`` into
    it: read-only, ``nosuid``/``nodev`` bind mounts of ``spec["read"]`` (symbolic links of ``spec["links"]``
    recreated as links, the names in ``spec["list"]`` as plain directories), read-only binds of ``/dev/null``,
    ``/dev/zero`` and ``/dev/urandom``, and a read-write bind of each ``spec["write"]`` directory; no procfs (only
    ``/proc/cpuinfo``, when ``spec["read"]`` names it).
    Everything else (the run's output, /tmp, other users' sockets, the public datasets) does not exist for the
    child: it cannot be read, stat-ed, watched, connected to or have its times changed. Runs as PID 1."""
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    new = spec["root"]
    _mount(libc, "tmpfs", new, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=4m")
    ro = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOATIME
    for path in spec.get("list", ()):
        os.makedirs(new + path, exist_ok=True)
    for path in spec["read"]:
        if not os.path.exists(path):
            continue
        _mountpoint(new + path, os.path.isdir(path))
        _mount(libc, path, new + path, None, _MS_BIND | _MS_REC)
        _read_only(libc, new + path, ro)
    for path, target in spec.get("links", ()):
        if not os.path.lexists(new + path):
            os.makedirs(os.path.dirname(new + path), exist_ok=True)
            os.symlink(target, new + path)
    for dev in DEVICES:
        _mountpoint(new + dev, False)
        _mount(libc, dev, new + dev, None, _MS_BIND)  # read-only: writing a device still works, its ACL does not
        _mount(libc, None, new + dev, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NOEXEC)
    for path in spec["write"]:
        _mountpoint(new + path, True)
        _mount(libc, path, new + path, None, _MS_BIND)
        _mount(libc, None, new + path, None, _MS_BIND | _MS_REMOUNT | _MS_NOSUID | _MS_NODEV)
    _mount(libc, None, new, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)  # the tmpfs
    os.chdir(new)
    _check(libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), b".", b"."), "pivot_root")
    _check(libc.umount2(b".", ctypes.c_int(_MNT_DETACH)), "umount the old root")
    os.chdir("/")


def _end_like(status: int) -> None:
    """Exit the way a child with wait ``status`` ended: its exit status, or its signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _outside(init: int) -> None:
    """The bootstrap's last job, outside the namespace: wait for its init and end the way the child ended (its
    exit status, or the same signal, so the trusted side can say "exceeded the CPU-time limit"); kill the
    namespace if the trusted side goes away."""
    import time

    os.closerange(3, 65536)  # keep no pipe end open: the trusted side sees EOF when the child dies
    parent = os.getppid()
    while True:
        done, status = os.waitpid(init, os.WNOHANG)
        if done:
            break
        if os.getppid() != parent:
            os.kill(init, signal.SIGKILL)  # the kernel then kills everything in the namespace
        time.sleep(0.2)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    if 128 < code < 128 + signal.NSIG:  # init's report of a child killed by a signal (init cannot die by one)
        _end_like(code - 128)  # type: ignore[arg-type]
    _end_like(status)


def _init(child: int) -> None:
    """PID 1 of the namespace: reap every orphan, and exit when the child does (status, or 128 + its signal; the
    kernel then kills whatever is left in the namespace). The child itself is not PID 1, so signals such as
    SIGXCPU keep their default action on it."""
    os.closerange(3, 65536)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else
                     os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


# -------------------------------------------------------------------------------------------------- capabilities


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _effective_caps(libc: ctypes.CDLL) -> int:
    data = (_CapData * 2)()
    _check(libc.capget(ctypes.byref(_CapHeader(_CAPABILITY_VERSION_3, 0)), data), "capget")
    return data[0].effective | (data[1].effective << 32)


def drop_privileges(libc: ctypes.CDLL, last: int) -> None:
    """Lock securebits, clear the bounding and ambient sets and every capability, then ``no_new_privs``: neither
    this process nor anything it execs (a setuid binary, a shell as root) holds or regains a capability."""
    if _effective_caps(libc):
        _check(libc.prctl(_PR_SET_SECUREBITS, ctypes.c_ulong(_SECUREBITS), 0, 0, 0), "PR_SET_SECUREBITS")
        for cap in range(last + 1):
            _check(libc.prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0), f"PR_CAPBSET_DROP {cap}")
    libc.prctl(_PR_CAP_AMBIENT, ctypes.c_ulong(_PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)  # EINVAL before Linux 4.3
    _check(libc.capset(ctypes.byref(_CapHeader(_CAPABILITY_VERSION_3, 0)), (_CapData * 2)()), "capset")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    if _effective_caps(libc):
        raise Refused("capabilities remain after capset")


# ---------------------------------------------------------------------------------------------------------- main


def _threads() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def confine(spec: dict) -> dict:
    """Apply every layer in this single-threaded process (after forking into new namespaces, in the fork).
    Returns what was applied. Raises :class:`Refused` when a layer ``spec["require"]`` names fails."""
    if _threads() != 1:
        raise Refused(f"the bootstrap has {_threads()} threads; confinement must precede every thread")
    libc = _libc()
    require = set(spec.get("require", ()))
    with open("/proc/sys/kernel/cap_last_cap") as f:  # read now: the child's root has no /proc
        last_cap = int(f.read())
    try:  # imported (and libseccomp found, by running ldconfig) before the PID namespace, whose first process
        _pyseccomp()  # must be our init, and before the child's root, which may not hold what this needs
    except Refused:
        pass
    applied: dict = {"namespaces": enter_namespaces(libc) if spec.get("namespaces", True) else ""}
    if "namespaces" in require and not applied["namespaces"]:
        raise Refused(f"cannot create namespaces ({os.strerror(ctypes.get_errno())})")
    if applied["namespaces"]:
        pid = os.fork()
        if pid:
            _outside(pid)
        libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)
        try:
            enter_root(libc, spec)
            applied["root"] = "minimal"
        except OSError as e:  # e.g. a container that forbids mounts: Landlock and seccomp still hold (the docs'
            if "root" in require:  # no-namespace case), and the log says so
                raise Refused(f"cannot build the child's root: {e}") from None
            sys.stderr.write(f"privbench sandbox: no private root ({e}); Landlock and seccomp confine the child\n")
            applied["root"] = ""
        pid = os.fork()
        if pid:
            _init(pid)
    limits = spec["limits"]
    mem, cpu, fsize = int(limits["memory_bytes"]), int(limits["cpu_seconds"]), int(limits["file_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    drop_privileges(libc, last_cap)
    applied["capabilities"] = "none"
    try:
        applied["landlock"] = apply_landlock(libc, list(spec["read"]), list(spec.get("list", ())), list(spec["write"]))
    except (Refused, OSError) as e:
        if "landlock" in require:
            raise Refused(str(e)) from None
        applied["landlock"] = 0
    try:
        apply_seccomp()
        applied["seccomp"] = True
    except (Refused, OSError) as e:
        if "seccomp" in require:
            raise Refused(str(e)) from None
        applied["seccomp"] = False
    return applied


def main(argv: list[str]) -> None:
    """``confine.py SPEC_FILE``: confine this process as the JSON file says, then exec ``spec["exec"]`` (with
    ``PRIVBENCH_CONFINED`` set to what was applied, as JSON). The file lies outside what the child may read."""
    with open(argv[1]) as f:
        spec = json.load(f)
    sys.path[:0] = list(spec.get("path", ()))
    try:
        applied = confine(spec)
    except Refused as e:
        sys.stderr.write(f"privbench sandbox: refused to start the child: {e}\n")
        sys.stderr.flush()
        os._exit(REFUSED)
    os.chdir(spec["cwd"])
    env = {**os.environ, "PRIVBENCH_CONFINED": json.dumps(applied, sort_keys=True)}
    os.execve(spec["exec"][0], list(spec["exec"]), env)


if __name__ == "__main__":
    main(sys.argv)
