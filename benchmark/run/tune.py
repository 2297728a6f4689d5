"""Per-ε hyperparameters of DP-SGD tuned on public data only: ``python -m privbench.run.tune SUITE``.

The search runs on the suite's aux split, which must be fixed across seeds (``splits.fixed_aux: true``), so that it
is disjoint from every seed's private split and the choice costs no privacy. Aux is cut once (fixed generator) into
80% proxy-train and 20% proxy-validation. Each candidate (a grid over ``lr`` and ``epochs`` around the configured
recipe) is planned for the *private* run: its sample rate q, its steps and the σ that meets the target ε there. The
proxy then trains on proxy-train with the same q and steps and σ scaled by ``n_proxy / n_private``, so that each
step's noise on the *mean* clipped gradient (σ·C / (q·n)) is the private run's; the pool the batches come from
and the batches themselves are smaller (so minibatch sampling noise is larger), and the proxy's step count may
differ by one from rounding. The best validation accuracy wins (ties: the earlier candidate); a winner on the grid's edge extends it outwards
(``lr`` either way, epochs downwards only; at most :data:`EXTEND` times, :func:`_outwards`). The search and its winner are written
to JSON next to the suite (``<suite>.tuning.json``), and the suite's ``dp-sgd`` entries carry the winners (a test
checks that they agree).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from privbench.core.contracts import RunContext
from privbench.core.errors import InputError
from privbench.core.images import DatasetInfo, ImageSet, Splits
from privbench.core.registry import DEFENSES
from privbench.core.seeding import derive_seed
from privbench.core.specs import SuiteConfig
from privbench.models import accuracy

#: The grid around a configured recipe: learning rate × {½, 1, 2} and epochs × {½, 1}.
LR_FACTORS = (0.5, 1.0, 2.0)
EPOCH_FACTORS = (0.5, 1.0)
#: How many times the grid extends outwards when the best learning rate lies on its edge.
EXTEND = 2
#: The share of aux the proxy trains on (the rest validates).
PROXY_TRAIN = 0.8


def proxy_split(aux: ImageSet) -> tuple[ImageSet, ImageSet]:
    """Aux cut into (proxy-train, proxy-validation) with a fixed generator (the same for every call)."""
    if len(aux) < 10:
        raise InputError(f"tuning needs at least 10 aux samples, the suite has {len(aux)}")
    perm = torch.randperm(len(aux), generator=torch.Generator().manual_seed(derive_seed(0, "dp-tuning")))
    k = int(len(aux) * PROXY_TRAIN)
    return aux.subset(perm[:k]), aux.subset(perm[k:])


def candidates(params: Any) -> list[Any]:
    """The grid of :data:`LR_FACTORS` × :data:`EPOCH_FACTORS` around ``params`` (a ``DPSGD.Params`` with
    ``epochs`` set), the configured recipe first."""
    if not params.epochs:
        raise InputError("dp-sgd tuning needs epochs set in the config (the grid scales them)")
    out = [params]
    for f, e in itertools.product(LR_FACTORS, EPOCH_FACTORS):
        c = dataclasses.replace(params, lr=params.lr * f, epochs=max(1, round(params.epochs * e)))
        if c not in out:
            out.append(c)
    return out


def _outwards(rows: list[dict[str, float]], params: Any, grid: list[Any]) -> list[Any]:
    """The candidates one step beyond the grid's edge where the best so far lies on it: ``lr`` × ½ or × 2 (at
    every epoch count tried), epochs × ½ at the best ``lr`` (never above the recipe's epochs, the budget cap)."""
    best = max(range(len(rows)), key=lambda i: (rows[i]["val_top1"], -i))
    lr, epochs = rows[best]["lr"], int(rows[best]["epochs"])
    lrs, eps = sorted({r["lr"] for r in rows}), sorted({int(r["epochs"]) for r in rows})
    more = []
    if lr in (lrs[0], lrs[-1]) and len(lrs) > 1:
        f = 0.5 if lr == lrs[0] else 2.0
        more += [dataclasses.replace(params, lr=lr * f, epochs=e) for e in eps]
    if epochs == eps[0] and epochs > 1:
        more.append(dataclasses.replace(params, lr=lr, epochs=max(1, epochs // 2)))
    return [c for c in dict.fromkeys(more) if c not in grid]


def proxy_accuracy(params: Any, n_private: int, train: ImageSet, val: ImageSet, info: DatasetInfo, task: Any,
                   device: torch.device) -> dict[str, float]:
    """One candidate: the private run's plan, then the proxy run on ``train`` at the same q and steps with σ scaled
    to the same noise on the mean gradient; returns its numbers and validation accuracy."""
    cls = DEFENSES.get("dp-sgd")
    plan = cls(params).plan(n_private, None, task)
    n = len(train)
    proxy = dataclasses.replace(params, target_epsilon=None, noise_multiplier=plan.noise_multiplier * n / n_private,
                                batch_size=max(1, round(plan.sample_rate * n)))
    splits = Splits(train, train.subset(torch.arange(1)), val, torch.arange(1),
                    dataclasses.replace(info, sizes={"private": n, "aux": 1, "test": len(val), "targets": 1}))
    ctx = RunContext(seed=0, device=device, task=task)
    start = time.perf_counter()
    release = cls(proxy).build(splits, ctx)
    return {"lr": params.lr, "epochs": params.epochs, "max_grad_norm": params.max_grad_norm,
            "batch_size": params.batch_size, "sigma_private": plan.noise_multiplier,
            "sigma_proxy": proxy.noise_multiplier, "steps": plan.steps, "sample_rate": plan.sample_rate,
            "val_top1": accuracy(release.model, val, device), "seconds": time.perf_counter() - start}


def tune_suite(suite: SuiteConfig, device: torch.device, only: Optional[Sequence[str]] = None,
               log=print, previous: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Tune every ``dp-sgd`` config with a ``target_epsilon`` of ``suite`` on each of its datasets (``only``:
    these datasets); returns ``{"searches": [...]}``, one entry per (dataset, config) with every candidate.
    ``previous``: an earlier result of the same code, whose candidates (same dataset, config, aux and code) are
    reused instead of retrained (``--resume``)."""
    from privbench.data import load_splits

    if not suite.splits.fixed_aux:
        raise InputError(f"suite {suite.name!r}: tuning on aux needs splits.fixed_aux: true (else aux overlaps "
                         "other seeds' private splits)")
    searches = []
    for dataset in suite.datasets:
        if only and dataset not in only:
            continue
        splits = load_splits(dataset, suite.splits, suite.seeds[0], suite.dataset_options.get(dataset))
        train, val = proxy_split(splits.aux)
        for spec in suite.defenses:
            if spec.id != "dp-sgd" or spec.params.target_epsilon is None or (
                    spec.datasets and dataset not in spec.datasets):
                continue
            rows: list[dict[str, float]] = []

            done = {(r["lr"], r["epochs"]): r for old in (previous or {}).get("searches", [])
                    if old["dataset"] == dataset and old["config"] == spec.params_dict
                    and old["aux_hash"] == splits.info.split_hashes["aux"] and old.get("code") == _code()
                    for r in old["candidates"]}

            def run(grid: list[Any]) -> None:
                for c in grid:
                    rows.append(done.get((c.lr, c.epochs)) or proxy_accuracy(c, len(splits.private), train, val,
                                                                              splits.info, suite.task, device))
                    log(f"{dataset} {spec.label} lr={c.lr:g} epochs={c.epochs}: val {rows[-1]['val_top1']:.4f} "
                        f"({rows[-1]['seconds']:.0f} s)")

            grid = candidates(spec.params)
            run(grid)
            for _ in range(EXTEND):  # a winner on the grid's edge: one more step outwards, at most EXTEND times
                more = _outwards(rows, spec.params, grid)
                if not more:
                    break
                grid += more
                run(more)
            best = max(range(len(rows)), key=lambda i: (rows[i]["val_top1"], -i))
            searches.append({"dataset": dataset, "config": spec.params_dict, "code": _code(), "aux_hash": splits.info.split_hashes["aux"],
                             "n_private": len(splits.private), "n_proxy_train": len(train), "n_proxy_val": len(val),
                             "candidates": rows, "best": {"lr": rows[best]["lr"], "epochs": rows[best]["epochs"]}})
    return {"searches": searches}


def _code() -> str:
    """The hash of the code a proxy run depends on (the core and dp-sgd's closure): candidates are reused only
    under it."""
    from privbench.core.codehash import plugin_hash
    from privbench.run.plan import core_hash

    return f"{core_hash()}:{plugin_hash(DEFENSES.get('dp-sgd'))}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    from privbench.run import plugins
    from privbench.run.config import load_suite

    ap = argparse.ArgumentParser(prog="python -m privbench.run.tune", description=__doc__.splitlines()[0])
    ap.add_argument("suite", help="suite name or YAML path (its aux split must be fixed: splits.fixed_aux: true)")
    ap.add_argument("--out", type=Path, help="where to write the search (default: <suite>.tuning.json beside it)")
    ap.add_argument("--dataset", action="append", help="tune on this dataset only (repeatable)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the candidates of the existing tuning file made by the same code")
    args = ap.parse_args(argv)
    plugins.load_builtins()
    suite = load_suite(args.suite)
    from privbench.run.config import SUITES_DIR

    out = args.out or (Path(args.suite).with_suffix(".tuning.json") if Path(args.suite).suffix
                       else SUITES_DIR / f"{suite.name}.tuning.json")
    previous = json.loads(out.read_text()) if args.resume and out.is_file() else None
    result = tune_suite(suite, torch.device(args.device), args.dataset, previous=previous)
    if out.is_file() and args.dataset:  # keep the other datasets' searches
        kept = [s for s in json.loads(out.read_text())["searches"] if s["dataset"] not in args.dataset]
        result["searches"] = kept + result["searches"]
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
