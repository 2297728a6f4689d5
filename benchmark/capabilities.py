"""Dropping root's capabilities in a sandbox child (:mod:`benchmark.sandbox`), before it starts any thread.

Capabilities are per thread, so this runs first thing in the child's ``python -c``, while the interpreter has one
thread: this module imports nothing but ctypes and os (not torch, which starts threads on import).
"""

from __future__ import annotations

import ctypes
import os

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_all() -> None:
    """As root, clear every capability (effective, permitted, inheritable) of this thread with ``capset(2)``: no
    kernel modules, mounts, raw devices or permission overrides. A no-op for other users, who have none.

    No maintained pure-Python binding exists (python-prctl needs libcap headers to build); this is the kernel's
    documented ABI (version 3: two 32-bit words per set)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.capset(ctypes.byref(_Header(_LINUX_CAPABILITY_VERSION_3, 0)), (_Data * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset failed: cannot drop root's capabilities")
