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
6. **seccomp** (libseccomp through ``pyseccomp``), denying with ``EPERM`` (:data:`DENIED_SYSCALLS`): new processes
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
   every system call newer than this list's review (:data:`FIRST_UNREVIEWED_SYSCALL`: ``setxattrat`` of Linux 6.13
   wrote ACLs). System calls of another architecture kill the process.

If a layer that ``spec["require"]`` names cannot be applied, the bootstrap prints why and exits with status
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

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET, _CLONE_NEWCGROUP = 0x10000000, 0x20000000, 0x40000000, 0x02000000
_CLONE_THREAD = 0x00010000
_NAMESPACES = _CLONE_NEWNS | _CLONE_NEWUTS | _CLONE_NEWIPC | _CLONE_NEWUSER | _CLONE_NEWPID | _CLONE_NEWNET | \
    _CLONE_NEWCGROUP
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

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every architecture.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION, _RULE_PATH_BENEATH = 1, 1
_FS = {"execute": 1 << 0, "write_file": 1 << 1, "read_file": 1 << 2, "read_dir": 1 << 3, "remove_dir": 1 << 4,
       "remove_file": 1 << 5, "make_char": 1 << 6, "make_dir": 1 << 7, "make_reg": 1 << 8, "make_sock": 1 << 9,
       "make_fifo": 1 << 10, "make_block": 1 << 11, "make_sym": 1 << 12, "refer": 1 << 13, "truncate": 1 << 14,
       "ioctl_dev": 1 << 15}
#: The file-system rights each ABI version handles.
_FS_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_FILE_RIGHTS = _FS["execute"] | _FS["write_file"] | _FS["read_file"] | _FS["truncate"] | _FS["ioctl_dev"]
_NET_TCP = 0b11  # BIND_TCP | CONNECT_TCP, ABI >= 4
_SCOPES = 0b11  # ABSTRACT_UNIX_SOCKET | SIGNAL, ABI >= 6
#: Devices a child may open (read; /dev/null also written): nothing else under /dev.
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")

#: Syscalls a child may not make (EPERM). ``socketpair``, ``clone``, ``fcntl`` and ``ioctl`` are filtered on their
#: arguments instead (:func:`apply_seccomp`).
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr", "unshare", "setns", "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key",
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget", "msgsnd", "msgrcv",
    "msgctl", "mq_open", "mq_unlink", "setsid", "setpgid", "mknod", "mknodat",
    # no process of its own: every limit (CPU, memory) is the whole sandbox's, and nothing can outlive it
    "fork", "vfork",
    # no socket but a connected socketpair: Landlock does not cover connect() to a pathname socket
    "socket", "connect", "bind", "listen", "accept", "accept4",
    # no metadata changes (Landlock covers only data; a root child owns every system file)
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "utime", "utimes", "utimensat", "futimesat",
    # no reading or steering the page cache, the error-free channel between children that read the same files
    "mincore", "cachestat", "fadvise64", "preadv2", "pwritev2",
    # nor counting its page faults (a major fault tells an uncached page from one an earlier child cached), nor
    # asynchronous I/O (an RWF_NOWAIT read fails on an uncached page)
    "getrusage", "io_setup", "io_submit", "io_getevents", "io_pgetevents", "io_cancel", "io_destroy",
    # no file locks: a lock on a file every child reads is a channel between children running at the same time
    "flock",
    # no watching what happens outside
    "inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_init", "fanotify_mark",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "name_to_handle_at", "open_by_handle_at",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
    "iopl", "ioperm", "syslog", "acct", "quotactl", "quotactl_fd", "settimeofday", "clock_settime", "adjtimex",
    "clock_adjtime", "sethostname", "setdomainname", "vhangup", "lookup_dcookie",
)
#: System calls numbered from here on were added after this list was reviewed (Linux 6.6, ``map_shadow_stack``):
#: ``setxattrat`` (Linux 6.13) let a child write an ACL on a device node. Each later number reports ``ENOSYS`` (libc
#: falls back to the older call), whatever libseccomp knows of it. The new syscalls share one numbering on every
#: architecture.
FIRST_UNREVIEWED_SYSCALL, LAST_FILTERED_SYSCALL = 453, 640
#: ``madvise`` advice a child may not give: MADV_COLD, MADV_PAGEOUT (they evict a file's pages from the cache).
DENIED_MADVISE = (20, 21)
#: ``fcntl`` commands a child may not use: F_SETLEASE (a lease stalls the file's next writer), F_NOTIFY (dnotify),
#: and the record locks F_GETLK, F_SETLK, F_SETLKW and their open-file forms (36-38): like ``flock``, a channel.
DENIED_FCNTL = (1024, 1026, 5, 6, 7, 36, 37, 38)
#: ``ioctl`` requests a child may not make: FS_IOC_SETFLAGS (and its 32-bit form), FS_IOC_FSSETXATTR,
#: FS_IOC_ENABLE_VERITY, FS_IOC_SETVERSION and its 32-bit form (each changes a file's metadata), TIOCSTI (types
#: into a terminal), and fscrypt's
#: SET_ENCRYPTION_POLICY, ADD/REMOVE(_ALL_USERS)_ENCRYPTION_KEY and GET_ENCRYPTION_KEY_STATUS (a store shared by
#: every process of the file system).
DENIED_IOCTL = (0x40086602, 0x40046602, 0x401C5820, 0x40806685, 0x5412, 0x40087602, 0x40047602,
                # fscrypt: keys and policies act on the whole file system, through any descriptor
                0x800C6613, 0xC0506617, 0xC0406618, 0xC0406619, 0xC080661A)
#: socketpair types other than SOCK_STREAM: a datagram socket may be sent to a pathname address.
_DGRAM_TYPES = (2, 3, 4, 5, 10)


class Refused(RuntimeError):
    """A required layer could not be applied."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return result


# ----------------------------------------------------------------------------------------------------- namespaces


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(libc: ctypes.CDLL) -> str:
    """Unshare PID, IPC, network, mount and UTS namespaces (inside a new user namespace unless root). Returns
    which were entered ("" when none could be: the caller keeps the process-group and seccomp guarantees)."""
    flags = _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWNET | _CLONE_NEWNS | _CLONE_NEWUTS
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        flags |= _CLONE_NEWUSER
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


# ------------------------------------------------------------------------------------------------------ Landlock


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi(libc: ctypes.CDLL | None = None) -> int:
    """The kernel's Landlock ABI version (0 when Landlock is unavailable)."""
    libc = libc or _libc()
    v = libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                     ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, v)


def apply_landlock(libc: ctypes.CDLL, read: list[str], listed: list[str], write: list[str]) -> int:
    """Restrict this thread (and all it starts or execs) to reading ``read`` and :data:`DEVICES`, listing the names
    in ``listed`` (not reading their files), writing beneath ``write`` (no device nodes), no TCP and no signals or
    abstract sockets out of the domain. Returns the ABI."""
    abi = landlock_abi(libc)
    if abi < 1:
        raise Refused("Landlock is not available in this kernel (Linux >= 5.13 with landlock in the LSM list)")
    fs = _FS_ABI[min(abi, 5)]
    attr = _RulesetAttr(fs, _NET_TCP if abi >= 4 else 0, _SCOPES if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = _check(libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                             ctypes.c_uint32(0)), "landlock_create_ruleset")
    reading = _FS["execute"] | _FS["read_file"] | _FS["read_dir"]
    writing = fs & ~(_FS["make_char"] | _FS["make_block"] | _FS["ioctl_dev"])
    rules = [(p, reading) for p in read] + [(p, _FS["read_dir"]) for p in listed] + [(p, writing) for p in write]
    rules += [(d, _FS["read_file"] | (_FS["write_file"] | _FS["truncate"] if d == "/dev/null" else 0)) for d in DEVICES]
    try:
        for path, access in rules:
            try:
                target = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if not os.path.isdir(path):
                    access &= _FILE_RIGHTS
                rule = _PathBeneath(access & fs, target)
                _check(libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH),
                                    ctypes.byref(rule), ctypes.c_uint32(0)), f"landlock_add_rule {path}")
            finally:
                os.close(target)
        _check(libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(fd)
    return abi


# ------------------------------------------------------------------------------------------------------- seccomp


def _pyseccomp():
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as e:  # RuntimeError: libseccomp itself is missing
        raise Refused(f"seccomp is unavailable: {e} (pip install pyseccomp; apt-get install libseccomp2)") from None
    return pyseccomp


def apply_seccomp() -> None:
    """Load the deny-list filter: :data:`DENIED_SYSCALLS`, ``clone`` of a process or with a namespace flag,
    datagram ``socketpair``, :data:`DENIED_FCNTL` and :data:`DENIED_IOCTL`; other architectures' system calls kill
    the process (libseccomp's default)."""
    sc = _pyseccomp()
    deny = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(deny, name)
        except (OSError, ValueError):  # a syscall this architecture or libseccomp does not know
            continue
    for kind in _DGRAM_TYPES:
        f.add_rule(deny, "socketpair", sc.Arg(1, sc.MASKED_EQ, 0xF, kind))
    f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))  # a process, not a thread
    for flag in (1 << b for b in range(32) if _NAMESPACES >> b & 1):  # clone(flags) with any namespace flag
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # its flags lie behind a pointer: libc falls back to clone
    for nr in range(FIRST_UNREVIEWED_SYSCALL, LAST_FILTERED_SYSCALL + 1):
        f.add_rule(sc.ERRNO(errno.ENOSYS), nr)
    for bit in range(8):  # fallocate with a mode: FALLOC_FL_KEEP_SIZE reserved 4 GiB past RLIMIT_FSIZE
        f.add_rule(deny, "fallocate", sc.Arg(1, sc.MASKED_EQ, 1 << bit, 1 << bit))
    for advice in DENIED_MADVISE:
        f.add_rule(deny, "madvise", sc.Arg(2, sc.EQ, advice))
    for cmd in DENIED_FCNTL:
        f.add_rule(deny, "fcntl", sc.Arg(1, sc.EQ, cmd))
    for request in DENIED_IOCTL:
        f.add_rule(deny, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    f.load()


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
