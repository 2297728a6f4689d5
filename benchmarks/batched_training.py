"""Batched training of M same-shaped models against a bare single-model PyTorch loop (issue 28, goal ≥ 2.0).

    python benchmarks/batched_training.py [--models 5] [--arch convnet] [--n 2000] [--epochs 2] [--threads 1]
                                          [--repeats 3] [--channels-last]

Both sides train on the same machine in this one run, alternating (bare, batched, bare, ...), on M Fashion-MNIST-
sized data sets (28×28 grey, 10 classes; synthetic tensors, since only the shapes matter for speed):

- **bare**: the plainest PyTorch loop (``model(x)``, cross-entropy, ``Adam.step()``) on one model, no privbench code;
- **batched**: :func:`privbench.models.batched.train_classifiers` on M models at once.

Prints per-model samples/s of each (median over repeats) and the ratio batched ÷ bare: the speed-up per model of
training M models together instead of M times alone. ``--threads`` sets torch's intra-op threads for both.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import torch
from torch.nn import functional as F

from privbench.core.images import ImageSet
from privbench.models.batched import train_classifiers
from privbench.models.nets import build_model


def _data(m: int, n: int, seed: int) -> list[ImageSet]:
    g = torch.Generator().manual_seed(seed)
    return [ImageSet(images=torch.rand(n, 1, 28, 28, generator=g), labels=torch.randint(0, 10, (n,), generator=g))
            for _ in range(m)]


def bare(arch: str, data: ImageSet, epochs: int, batch: int, fmt: torch.memory_format) -> float:
    """Seconds of the bare loop on one model (``fmt``: the model's and the inputs' memory format)."""
    model = build_model(arch, 1, 10).train().to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(data), generator=g)
        for i in range(0, len(data), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(data.images[idx].contiguous(memory_format=fmt)), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def batched(arch: str, datas: list[ImageSet], epochs: int, batch: int) -> float:
    """Seconds of :func:`train_classifiers` on ``len(datas)`` models."""
    models = [build_model(arch, 1, 10) for _ in datas]
    start = time.perf_counter()
    train_classifiers(models, datas, epochs=epochs, batch_size=batch, lr=1e-3, device=torch.device("cpu"),
                      generators=[torch.Generator().manual_seed(i) for i in range(len(datas))])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--arch", default="convnet")
    ap.add_argument("--n", type=int, default=2000, help="samples per model")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="the task's default batch size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--channels-last", action="store_true",
                    help="the bare loop in channels-last memory format (the batched side is unchanged)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    datas = _data(args.models, args.n, 0)
    samples = args.n * args.epochs
    bare_s, batched_s = [], []
    for _ in range(args.repeats):
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        bare_s.append(samples / bare(args.arch, datas[0], args.epochs, args.batch, fmt))
        batched_s.append(args.models * samples / batched(args.arch, datas, args.epochs, args.batch))
    b, m = statistics.median(bare_s), statistics.median(batched_s)
    print(f"{date.today()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s); {args.arch}, {args.models} models x {args.n} samples x {args.epochs} epochs, "
          f"batch {args.batch}" + (", bare loop channels-last" if args.channels_last else ""))
    print(f"bare single-model loop: {b:,.0f} samples/s per model   (runs: {', '.join(f'{x:,.0f}' for x in bare_s)})")
    print(f"batched ({args.models} models):     {m:,.0f} samples/s per model   "
          f"(runs: {', '.join(f'{x:,.0f}' for x in batched_s)})")
    print(f"ratio batched / bare: {m / b:.2f}  (goal >= 2.0)")


if __name__ == "__main__":
    main()
