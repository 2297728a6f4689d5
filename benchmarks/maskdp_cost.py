"""Cost of one MaskDP epoch against one DP-SGD epoch (Opacus) and one plain SGD epoch, same model, data and batch,
measured in one run on one machine (goal: MaskDP ÷ DP-SGD ≤ 2.2, since it needs two per-sample passes).

    python benchmarks/maskdp_cost.py [--repeats 3] [--clips 300]

The model is the video suite's ``clipnet`` (width 16, no BatchNorm) on synthetic-actions clips (16 frames, 48×48);
each figure is the median over ``--repeats`` epochs after one warm-up epoch.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch.nn import functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    from opacus import PrivacyEngine

    from privbench.core.contracts import TaskConfig
    from privbench.core.provenance import cpu_model
    from privbench.core.seeding import seeded
    from privbench.core.specs import SplitConfig
    from privbench.data import load_splits
    from privbench.defenses.dp_sgd import DPSGD
    from privbench.defenses.maskdp import blank, residual_update
    from privbench.models import input_channels
    from privbench.run.plugins import load_plugins

    load_plugins()
    splits = load_splits("synthetic-actions", SplitConfig(private=args.clips, aux=60, test=60, targets=10,
                                                          scale="fit"), 0)
    x, y = splits.private.images, splits.private.labels
    public = blank(x, ~splits.private.masks)
    task = TaskConfig(model="clipnet", width=16, batch_size=args.batch)

    def fresh() -> torch.nn.Module:
        with seeded(torch.Generator().manual_seed(0)):
            return DPSGD(DPSGD.Params()).task_model(input_channels(splits.info.shape), 10, task)

    batches = [torch.arange(i, min(i + args.batch, len(x))) for i in range(0, len(x), args.batch)]

    def plain_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()

    def maskdp_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        g = torch.Generator().manual_seed(1)
        for idx in batches:
            update = residual_update(model, x[idx], public[idx], y[idx], 0.1, 1.0, g, float(len(idx)))
            for name, prm in model.named_parameters():
                prm.grad = update[name]
            opt.step()

    def timed(epoch, model, opt) -> float:
        epoch(model, opt)  # warm-up
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            epoch(model, opt)
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    m = fresh()
    plain = timed(plain_epoch, m, torch.optim.SGD(m.parameters(), lr=0.1))
    m = fresh()
    maskdp = timed(maskdp_epoch, m, torch.optim.SGD(m.parameters(), lr=0.1))
    m = fresh()
    engine = PrivacyEngine(accountant="rdp")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=args.batch,
                                         generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, opt, loader = engine.make_private(module=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.1),
                                                  data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)

        def dp_epoch(model: torch.nn.Module, o: torch.optim.Optimizer) -> None:
            for xb, yb in loader:
                if len(xb) == 0:
                    continue
                o.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                o.step()

        dpsgd = timed(dp_epoch, module, opt)
    print(f"# {cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"{len(x)} clips {tuple(x.shape[1:])}, batch {args.batch}, median of {args.repeats} epochs")
    print("| training | s / epoch | ÷ plain SGD | ÷ DP-SGD |\n|---|---|---|---|")
    for name, t in (("plain SGD", plain), ("DP-SGD (Opacus)", dpsgd), ("MaskDP (residual)", maskdp)):
        print(f"| {name} | {t:.2f} | {t / plain:.2f} | {t / dpsgd:.2f} |")


if __name__ == "__main__":
    main()
