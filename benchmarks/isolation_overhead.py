"""Cost of running an attack in its isolated child process, measured against calling it in-process, in one run.

    python benchmarks/isolation_overhead.py [--repeats 5]

For a cheap attack (histogram-linkage) and a training attack (inversion-decoder, 2 epochs) on `blur` over digits,
prints the median wall time in-process (``attack.run`` on a hand-built view; not how the runner runs attacks) and
through ``privbench.run.evaluate.attack_release`` (forkserver child, pickled view, queries over a pipe), and their
difference and ratio. The first isolated call also pays for starting the fork server; it is reported separately.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from privbench.core.contracts import AttackContext, AttackView, RunContext, TaskConfig
    from privbench.core.provenance import cpu_model
    from privbench.core.registry import ATTACKS, DEFENSES
    from privbench.core.specs import PluginSpec, SplitConfig
    from privbench.data import load_splits
    from privbench.run.evaluate import EvalOptions, attack_release, exposed_surfaces
    from privbench.run.isolation import DefenderServices, attack_view_release
    from privbench.run.plugins import load_plugins

    load_plugins()
    task = TaskConfig(width=8, epochs=1)
    splits = load_splits("digits", SplitConfig(private=500, aux=500, test=200, targets=200), 0)
    defense = DEFENSES.get("blur")()
    release = defense.build(splits, RunContext(0, torch.device("cpu"), task))
    opts = EvalOptions(threads=torch.get_num_threads())
    print(f"# {cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    t0 = time.perf_counter()
    attack_release(PluginSpec("histogram-linkage", ATTACKS.get("histogram-linkage").Params()), release, splits, 0,
                   task, opts)
    print(f"first isolated call (starts the fork server): {time.perf_counter() - t0:.2f} s")
    print("| attack | in-process (s) | isolated (s) | overhead (s) | ratio |\n|---|---|---|---|---|")
    for attack_id, params in (("histogram-linkage", {}), ("inversion-decoder", {"epochs": 2, "width": 8})):
        cls = ATTACKS.get(attack_id)
        spec = PluginSpec(attack_id, cls.Params(**params))
        inproc, isolated = [], []
        for _ in range(args.repeats):
            # In-process reference: the same restricted view, the transform served by a local DefenderServices.
            view_release = attack_view_release(release, exposed_surfaces(cls, release.surfaces),
                                               defense.public_info(splits.info.shape))
            services = DefenderServices(release, secret=1)
            if view_release.transform is not None:
                view_release.transform._channel = _LocalChannel(services)
            from privbench.run.scoring import gallery_permutation

            gallery = gallery_permutation(splits, 0)[0] if cls.needs_gallery else None
            view = AttackView(view_release, splits.aux, splits.targets.clone(), tuple(splits.info.shape),
                              splits.info.num_classes, gallery=gallery)
            t = time.perf_counter()
            cls(spec.params).run(view, AttackContext(torch.device("cpu"), task, stream=1))
            inproc.append(time.perf_counter() - t)
            t = time.perf_counter()
            attack_release(spec, release, splits, 0, task, opts)
            isolated.append(time.perf_counter() - t)
        a, b = statistics.median(inproc), statistics.median(isolated)
        print(f"| {attack_id} | {a:.3f} | {b:.3f} | {b - a:.3f} | {b / a:.2f} |")


class _LocalChannel:
    """Serves proxy requests in-process (for the in-process reference only)."""

    def __init__(self, services) -> None:
        self.services = services

    def request(self, op: str, **payload):
        return self.services.handle(op, payload)


if __name__ == "__main__":
    main()
