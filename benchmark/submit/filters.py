"""The kernel filters of a sandbox child: its Landlock ruleset and its seccomp filter (layers 5 and 6 of
:mod:`privbench.submit.confine`, whose docstring says what each denies and why).

Standard library only (and ``pyseccomp``): :mod:`~privbench.submit.confine` runs by path in ``python -I -S`` and
loads this file by path beside it.
"""

from __future__ import annotations

import ctypes
import errno
import os

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET, _CLONE_NEWCGROUP = 0x10000000, 0x20000000, 0x40000000, 0x02000000
_CLONE_THREAD = 0x00010000
_NAMESPACES = _CLONE_NEWNS | _CLONE_NEWUTS | _CLONE_NEWIPC | _CLONE_NEWUSER | _CLONE_NEWPID | _CLONE_NEWNET | \
    _CLONE_NEWCGROUP

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
