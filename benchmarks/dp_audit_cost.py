"""Cost of `privbench dp-audit` for one DP configuration as a ratio to the training it audits, in one run.

    python benchmarks/dp_audit_cost.py [--suite video] [--defense maskdp] [--trials 20000] [--canaries 1000]

Times (a) the defense's own DP training run (its ``build`` on the suite's first dataset, seed 0: the model it
releases) and (b) ``privbench.ops.dpaudit.audit_defense`` for the same configuration (step-level audit with
``--trials`` steps per world, one-run audit with ``--canaries`` over the run's steps), and prints both and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="video")
    ap.add_argument("--defense", default="maskdp")
    ap.add_argument("--trials", type=int, default=20_000)
    ap.add_argument("--canaries", type=int, default=1000)
    args = ap.parse_args()

    from privbench.core.contracts import RunContext
    from privbench.core.provenance import cpu_model
    from privbench.core.registry import DEFENSES
    from privbench.data import load_splits
    from privbench.ops.dpaudit import AuditPlan, audit_defense
    from privbench.run.config import load_suite
    from privbench.run.plugins import load_plugins

    load_plugins()
    suite = load_suite(args.suite)
    spec = next(s for s in suite.defenses if s.id == args.defense and DEFENSES.get(s.id)(s.params).claimed())
    dataset = suite.datasets[0]
    splits = load_splits(dataset, suite.splits, suite.seeds[0], suite.dataset_options.get(dataset))
    defense = DEFENSES.get(spec.id)(spec.params)
    start = time.perf_counter()
    defense.build(splits, RunContext(seed=0, device=torch.device("cpu"), task=suite.task))
    train = time.perf_counter() - start
    start = time.perf_counter()
    result = audit_defense(defense, len(splits.private), tuple(splits.info.shape), splits.private.identities,
                           suite.task, AuditPlan(trials=args.trials, canaries=args.canaries))
    audit = time.perf_counter() - start
    print(f"{cpu_model()}, {torch.get_num_threads()} torch threads; {args.suite} {spec.id} {defense.strength_param()}={getattr(spec.params, defense.strength_param())} on {dataset}")
    print(f"training (build): {train:.1f} s; dp-audit: {audit:.1f} s (step {result['step']['seconds']:.1f} s, "
          f"one-run {result['one_run']['seconds']:.1f} s); audit / training = {audit / train:.2f}")
    print(f"step ε̂ {result['step']['epsilon_lower']:.3f} (claim {result['step']['claimed']:.3f}); one-run ε̂ "
          f"{result['one_run']['epsilon_lower']:.3f} (claim {result['one_run']['claimed']:.3f})")


if __name__ == "__main__":
    main()
