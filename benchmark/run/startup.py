"""The start-up every process of a run shares (pool workers, attack and platform children, sandbox children):
an exit when its starter goes away, the thread count, PyTorch's determinism settings and the plugins."""

from __future__ import annotations

import os
from typing import Optional


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie (exited, not reaped: a killed run's workers under an init that does not
    reap, as in many containers) counts as gone, and so does a pid owned by someone else (recycled)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal probe is all there is
    return state not in (b"Z", b"X")


def exit_with_parent(parent: Optional[int] = None, requester: Optional[int] = None) -> None:
    """A daemon thread ending this process when the process that started it goes away (e.g. the runner was
    killed): attack and platform children, pool workers and the pool's queue manager. ``parent``: the pid the
    starter had, passed by it; without it a process that starts up slowly (a loaded machine) and finds its starter
    already dead would take its new parent (init) for the starter and never exit. ``requester``: a process that
    is not the parent but whose death must end this one too — a forkserver child's parent is the fork server,
    which outlives a killed worker, so attack children also watch the worker that asked for them."""
    import threading
    import time

    if parent is None:
        parent = os.getppid()
    elif os.getppid() != parent:
        os._exit(3)
    if requester is not None and not _alive(requester):
        os._exit(3)

    def watch() -> None:
        while os.getppid() == parent and (requester is None or _alive(requester)):
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="privbench-parent-watch").start()


def start_process(threads: int, plugins: Optional[tuple[str, ...]] = (), parent: Optional[int] = None,
                  requester: Optional[int] = None) -> None:
    """Start-up of a worker or child: :func:`exit_with_parent` (``parent``, ``requester``: see there),
    ``threads`` intra-op threads (at least 1), deterministic kernels, then the built-in plugins with ``plugins``
    (``--plugin`` files), or the built-ins and installed entry points only when ``plugins`` is ``None`` (a sandbox
    child, which imports its submission itself)."""
    import torch  # here, not at the top: the run's queue manager imports this module for exit_with_parent only

    from privbench.core.seeding import set_deterministic
    from privbench.run.plugins import load_builtins, load_plugins

    exit_with_parent(parent, requester)
    torch.set_num_threads(max(1, int(threads)))
    set_deterministic()
    if plugins is None:
        load_builtins()
    else:
        load_plugins(plugins)
