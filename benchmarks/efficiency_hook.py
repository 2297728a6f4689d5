"""Process-wide timers for ``benchmarks/efficiency.py``; installed by a generated ``sitecustomize`` in every process.

Counts CPU seconds (``time.process_time``, all threads of the process) spent in the outermost of:

- ``forward_grad``: a module forward with autograd enabled (training and attack optimisation);
- ``forward_nograd``: a module forward under ``no_grad``/``inference_mode`` (evaluation, metrics, attack inference);
- ``backward``: ``torch.autograd.backward`` (``Tensor.backward``) and ``torch.autograd.grad``, Opacus' per-sample
  gradient hooks included;
- ``optimizer_step``: ``Optimizer.step`` (a closure-driven step counts whole).

Nested regions count once, in the outermost. Totals go to ``$PRIVBENCH_EFFICIENCY_DIR/<pid>.json`` every few seconds
and at exit, so a process that ends with ``os._exit`` (pool workers) loses at most the last few seconds. The project's
code is not touched, so its code hash (and every record's staleness) is unchanged.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import resource
import sys
import threading
import time
from multiprocessing import util
from pathlib import Path

import torch
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

FLUSH_SECONDS = 2.0


class _Timers:
    """Outermost-region CPU timers of one process; region state is per thread."""

    def __init__(self, out: Path) -> None:
        self.dir = out
        self.reset()

    def reset(self) -> None:
        """Fresh totals: at install, and in a child forked from a process that has them (forkserver's children)."""
        self.start_cpu = time.process_time()
        self.totals = dict.fromkeys(("forward_grad", "forward_nograd", "backward", "optimizer_step"), 0.0)
        self.regions = 0
        self.first_region_cpu: float | None = None
        self.last_flush = time.monotonic()
        self.local = threading.local()
        util.Finalize(self, self.flush, exitpriority=0)  # forked children start with an empty registry

    def enter(self, kind: str) -> None:
        depth = getattr(self.local, "depth", 0)
        self.local.depth = depth + 1
        if depth == 0:
            self.local.kind, self.local.t0 = kind, time.process_time()
            if self.first_region_cpu is None:
                self.first_region_cpu = self.local.t0

    def leave(self) -> None:
        self.local.depth -= 1
        if self.local.depth == 0:
            self.totals[self.local.kind] += time.process_time() - self.local.t0
            self.regions += 1
            if time.monotonic() - self.last_flush > FLUSH_SECONDS:
                self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        payload = {"pid": os.getpid(), "argv": sys.argv, "main": multiprocessing.parent_process() is None,
                   "cpu_seconds": time.process_time(),
                   "import_cpu_seconds": self.start_cpu, "first_region_cpu_seconds": self.first_region_cpu,
                   "regions": self.regions, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   **self.totals}
        out = self.dir / f"{os.getpid()}.json"
        tmp = out.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, out)
        except FileNotFoundError:  # the benchmark already read the totals and removed the directory
            pass

    def wrap(self, fn):
        def timed(*args, **kwargs):
            self.enter("backward")
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()
        return timed


def install(out: Path) -> _Timers:
    """Register the global hooks; returns the timers (kept alive by the hooks' closures)."""
    timers = _Timers(out)
    register_module_forward_pre_hook(
        lambda module, args: timers.enter("forward_grad" if torch.is_grad_enabled() else "forward_nograd"))
    register_module_forward_hook(lambda module, args, output: timers.leave(), always_call=True)
    register_optimizer_step_pre_hook(lambda opt, args, kwargs: timers.enter("optimizer_step"))
    register_optimizer_step_post_hook(lambda opt, args, kwargs: timers.leave())
    torch.autograd.backward = timers.wrap(torch.autograd.backward)
    torch.autograd.grad = timers.wrap(torch.autograd.grad)
    atexit.register(lambda: timers.flush())
    util.register_after_fork(timers, _Timers.reset)
    return timers
