"""Side by side: privbench's Inverting Gradients (`gradient-ig`) vs breaching's (Geiping et al.'s own library) on the
same model, image, label and iteration budget; prints PSNR (against the original) and wall time of each.

breaching is not a privbench dependency; install it in a separate benchmark environment:

    python -m venv --system-site-packages .venv-bench && .venv-bench/bin/pip install breaching
    .venv-bench/bin/python benchmarks/compare_breaching.py --iterations 500 --model convnet --images 3

Both run each tool's own default hyperparameters for Inverting Gradients (cosine objective, TV prior, signed Adam,
step decay, boxed to [0, 1]) with the label inferred from the gradient (iDLG rule), one restart, on the CPU with the
same torch thread count. The model is the privbench task model at initialisation, in eval mode, as the `gradients`
surface shares it.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    import breaching
    from omegaconf import OmegaConf

    from privbench.attacks.gradient import InvertingGradients
    from privbench.core.contracts import RunContext, TaskConfig
    from privbench.core.specs import SplitConfig
    from privbench.data import load_splits
    from privbench.defenses import DEFENSES
    from privbench.metrics.image import psnr

    torch.set_num_threads(args.threads)
    splits = load_splits(args.dataset, SplitConfig(private=200, aux=200, test=200, targets=args.images), 0)
    ctx = RunContext(seed=0, device=torch.device("cpu"), task=TaskConfig(model=args.model, width=args.width, epochs=1))
    release = DEFENSES.get("none")().build(splits, ctx)
    oracle = release.gradients
    model = oracle.model
    params = InvertingGradients.Params(batch_size=1, targets=1, steps=args.iterations, restarts=1)
    if args.tv is not None:
        params = InvertingGradients.Params(batch_size=1, targets=1, steps=args.iterations, restarts=1, tv=args.tv)
    ours = InvertingGradients(params)

    cfg = breaching.get_config(overrides=["attack=invertinggradients"]).attack
    cfg.optim.max_iterations = args.iterations
    cfg.optim.callback = args.iterations + 1
    cfg.restarts.num_trials = 1
    cfg.label_strategy = "iDLG"
    setup = dict(device=torch.device("cpu"), dtype=torch.float)
    attacker = breaching.attacks.prepare_attack(model, torch.nn.CrossEntropyLoss(), cfg, setup)
    c, h, w = splits.info.shape
    metadata = OmegaConf.create({"shape": [c, h, w], "mean": [0.0] * c, "std": [1.0] * c, "modality": "vision",
                                 "classes": splits.info.num_classes})
    payload = [{"parameters": [p.detach() for p in model.parameters()],
                "buffers": [b.detach() for b in model.buffers()], "metadata": metadata}]
    rows = []
    for i, idx in enumerate(splits.targets.tolist()):
        original = splits.private.images[idx:idx + 1]
        grads = oracle(torch.tensor([idx]))
        g = ctx.generator(salt=1000 + i)
        t0 = time.perf_counter()
        x_ours, _ = ours.invert(model, grads, (1, c, h, w), splits.info.num_classes, g)
        t_ours = time.perf_counter() - t0
        shared = [{"gradients": list(grads), "buffers": None,
                   "metadata": {"num_data_points": 1, "labels": None, "local_hyperparams": None}}]
        torch.manual_seed(1000 + i)
        t0 = time.perf_counter()
        out, _ = attacker.reconstruct(payload, shared, {}, dryrun=False)
        t_theirs = time.perf_counter() - t0
        x_theirs = out["data"].clamp(0, 1)
        rows.append({"image": i, "ours_psnr": float(psnr(x_ours.clamp(0, 1), original)),
                     "ours_seconds": t_ours, "breaching_psnr": float(psnr(x_theirs, original)),
                     "breaching_seconds": t_theirs})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="photo-patches")  # breaching's TV prior assumes 3 channels
    ap.add_argument("--model", default="convnet")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tv", type=float, default=None, help="override gradient-ig's TV weight")
    args = ap.parse_args()
    logging.disable(logging.INFO)
    rows = run(args)
    n = len(rows)
    mean = {k: sum(r[k] for r in rows) / n for k in rows[0] if k != "image"}
    print(f"\n| tool | mean PSNR (dB) | mean wall time (s) |\n|---|---|---|\n"
          f"| privbench gradient-ig | {mean['ours_psnr']:.2f} | {mean['ours_seconds']:.1f} |\n"
          f"| breaching invertinggradients | {mean['breaching_psnr']:.2f} | {mean['breaching_seconds']:.1f} |\n"
          f"({args.dataset}, {args.model} width {args.width}, {args.iterations} iterations, {n} images, "
          f"{args.threads} threads)")


if __name__ == "__main__":
    main()
