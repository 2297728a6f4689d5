"""Performance ratios measured in one run on one machine (issue 15; docs/BENCHMARKS.md records them).

    python benchmarks/ratios.py [--repeats 5] [--only speed,train,dp,ig,report]

Each ratio compares privbench's code path with a bare PyTorch reference doing the same arithmetic on the same
machine, interleaved (A, B, A, B, ...) and summarised by the median, so the machine's speed cancels:

- ``speed``: the machine's yardstick, not a ratio: samples/s of the bare training loop below. The README states its
  times with this figure, so a reader scales them to another machine by the ratio of the two speeds.
- ``train``: task-model training throughput (samples/s) of ``privbench.models.train.train_classifier`` ÷ a bare
  loop (same convnet width 32, batch 64, Adam, 1,000 mnist5k images, 2 epochs). Goal ≥ 0.8.
- ``dp``: one DP-SGD training step as ``privbench.defenses.dp_sgd`` trains (Opacus, per-sample clipping and noise) ÷ one
  non-private step, same model (BatchNorm removed, as dp-sgd does) and batch of 64. Goal ≤ 2. Also the gradient
  surface's one-batch mechanism (``dp_gradients``, vmap per-sample gradients) ÷ the same plain step.
- ``ig``: one gradient-ig (Inverting Gradients) iteration of ``privbench.attacks.gradient`` ÷ a bare double-backward step
  (cosine gradient matching + total variation, Adam on the dummy image), LeNet, batch 1. Goal ≤ 1.1.
- ``report``: ``privbench report`` on the committed quick board, first run (``--force``) and cached re-run, in
  seconds (goals ≤ 1 s and ≤ 2 s; these are times, not ratios: process start-up included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's privbench, whatever is installed


def _interleaved(a: Callable[[], None], b: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, run alternately after one warm-up each."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def _mnist(n: int = 1000):
    from privbench.core.specs import SplitConfig
    from privbench.data import load_splits

    return load_splits("mnist5k", SplitConfig(private=n, aux=10, test=10, targets=1), 0).private


def _bare_loop(data, epochs: int, batch: int) -> None:
    """The reference: a plain PyTorch training loop (convnet width 32, Adam, shuffled mini-batches)."""
    from privbench.models import build_model

    model = build_model("convnet", 1, 10, width=32).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(data), generator=g)
        for i in range(0, len(data), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(data.images[idx]), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def reference_speed(repeats: int) -> str:
    data, epochs, batch = _mnist(), 2, 64
    _bare_loop(data, epochs, batch)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _bare_loop(data, epochs, batch)
        times.append(time.perf_counter() - t0)
    return (f"speed: bare PyTorch training loop {epochs * len(data) / statistics.median(times):,.0f} samples/s "
            f"(convnet width 32, batch {batch}, Adam; the machine's yardstick)")


def train_ratio(repeats: int) -> str:
    from privbench.models import build_model
    from privbench.models.train import train_classifier

    data, epochs, batch = _mnist(), 2, 64

    def privbench() -> None:
        model = build_model("convnet", 1, 10, width=32)
        train_classifier(model, data, epochs=epochs, batch_size=batch, lr=3e-3,
                         generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))

    def bare() -> None:
        _bare_loop(data, epochs, batch)

    tp, tb = _interleaved(privbench, bare, repeats)
    return f"train: privbench {tp:.3f} s, bare loop {tb:.3f} s; throughput ratio {tb / tp:.2f} (goal >= 0.8)"


def dp_ratio(repeats: int) -> str:
    """Opacus' DP-SGD training step as ``dp-sgd`` trains (hooks mode, no BatchNorm) and the gradient surface's
    one-batch mechanism (``dp_gradients``), each ÷ a plain step of the same model (without BatchNorm) and batch."""
    import warnings

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from privbench.defenses.dp_sgd import DPSGD, dp_gradients

    data = _mnist(64)
    x, y = data.images, data.labels
    task_model = DPSGD(DPSGD.Params()).task_model

    def model_and_opt() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        from privbench.core.contracts import TaskConfig

        model = task_model(1, 10, TaskConfig(model="convnet", width=32))
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt = model_and_opt()
        module, dp_opt, _ = PrivacyEngine(accountant="rdp").make_private(
            module=model, optimizer=opt, data_loader=DataLoader(TensorDataset(x, y), batch_size=64),
            noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)
    plain_model, plain_opt = model_and_opt()
    mechanism = dp_gradients(max_grad_norm=1.0, noise_multiplier=1.0)
    g = torch.Generator().manual_seed(0)
    params = [p for p in plain_model.parameters() if p.requires_grad]

    def opacus_step() -> None:
        dp_opt.zero_grad(set_to_none=True)
        F.cross_entropy(module(x), y).backward()
        dp_opt.step()

    def oracle_step() -> None:
        for p, gr in zip(params, mechanism(plain_model, x, y, g)):
            p.grad = gr
        plain_opt.step()

    def plain() -> None:
        plain_opt.zero_grad(set_to_none=True)
        F.cross_entropy(plain_model(x), y).backward()
        plain_opt.step()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        to, tb = _interleaved(opacus_step, plain, repeats * 4)
        tm, tb2 = _interleaved(oracle_step, plain, repeats * 4)
    return (f"dp: Opacus training step {to * 1e3:.1f} ms, plain step {tb * 1e3:.1f} ms; ratio {to / tb:.2f} "
            f"(goal <= 2)\n    gradient-surface mechanism (vmap per-sample grads) {tm * 1e3:.1f} ms; ratio "
            f"{tm / tb2:.2f}")


def ig_ratio(repeats: int) -> str:
    from privbench.attacks.gradient import InvertingGradients
    from privbench.models import build_model

    model = build_model("lenet", 1, 10).eval()
    data = _mnist(1)
    x, y = data.images, data.labels
    params = [p for p in model.parameters() if p.requires_grad]
    target = tuple(t.detach() for t in torch.autograd.grad(F.cross_entropy(model(x), y), params))
    steps = 60
    attack = InvertingGradients(InvertingGradients.Params(batch_size=1, targets=1, steps=steps, restarts=1))

    def privbench() -> None:
        attack.invert(model, target, tuple(x.shape), 10, torch.Generator().manual_seed(0))

    def bare() -> None:  # the same objective and optimiser, written out (label inference aside: one argmin)
        labels = target[-1].argmin().view(1)
        dummy = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        opt = torch.optim.Adam([dummy], lr=0.1)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            grads = torch.autograd.grad(F.cross_entropy(model(dummy), labels), params, create_graph=True)
            dot = sum((a * b).sum() for a, b in zip(grads, target))
            norm = torch.sqrt(sum((a * a).sum() for a in grads)) * torch.sqrt(sum((b * b).sum() for b in target))
            tv = (dummy[..., 1:, :] - dummy[..., :-1, :]).abs().mean() + (dummy[..., 1:] - dummy[..., :-1]).abs().mean()
            (dummy.grad,) = torch.autograd.grad(1 - dot / norm + 1e-2 * tv, [dummy])
            dummy.grad.sign_()
            opt.step()
            with torch.no_grad():
                dummy.clamp_(0, 1)

    tp, tb = _interleaved(privbench, bare, repeats)
    return (f"ig: {steps} iterations privbench {tp:.3f} s, bare double-backward {tb:.3f} s; ratio {tp / tb:.2f} "
            "(goal <= 1.1)")


def report_times(repeats: int) -> str:
    board = ROOT / "leaderboards" / "quick"
    cmd = [sys.executable, "-m", "benchmark", "report", str(board)]
    first, cached = [], []
    for _ in range(max(1, repeats // 2)):
        t0 = time.perf_counter()
        subprocess.run(cmd + ["--force"], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        cached.append(time.perf_counter() - t0)
    return (f"report (quick board): first run {statistics.median(first):.2f} s (goal <= 1 s), cached re-run "
            f"{statistics.median(cached):.2f} s (goal <= 2 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="speed,train,dp,ig,report")
    args = ap.parse_args()

    from privbench.core.provenance import cpu_model
    from privbench.run.plugins import load_plugins

    load_plugins()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    runs = {"speed": reference_speed, "train": train_ratio, "dp": dp_ratio, "ig": ig_ratio, "report": report_times}
    for name in args.only.split(","):
        print(runs[name](args.repeats), flush=True)


if __name__ == "__main__":
    main()
