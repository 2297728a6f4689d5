"""PCK of a person estimator's 2-D keypoints against synthetic-actions' ground truth, in one run.

    python benchmarks/pose_pck.py [--estimator mediapipe] [--clips 40] [--size 192]

PCK@α: the share of ground-truth joints (inside the frame) whose estimate lies within α × the person's torso length
(neck to pelvis) of the truth, for α = 0.2 and 0.5; a joint the estimator did not return counts as a miss. Prints
per-joint PCK@0.5 too. MediaPipe Pose needs people larger than the default 48-pixel clips, hence ``--size``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estimator", default="mediapipe")
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--frames", type=int, default=8)
    args = ap.parse_args()

    from privbench.core.images import ImageSet
    from privbench.core.provenance import cpu_model
    from privbench.data.actions import JOINTS, generate
    from privbench.defenses.people import estimator

    made = generate(max(1, args.clips // 10), 10, args.frames, args.size, seed=0, shake=0)
    clips = torch.from_numpy(made.clips[: args.clips]).permute(0, 1, 4, 2, 3).float().div(255.0)
    truth = made.keypoints[: args.clips]  # (N, T, J, 2)
    est = estimator(args.estimator).estimate(ImageSet(clips, torch.zeros(len(clips), dtype=torch.int64)))
    if est.keypoints is None:
        raise SystemExit(f"estimator {args.estimator!r} gives no keypoints")
    pred = est.keypoints[:, :, 0].numpy()  # the first (largest) person
    j = {n: i for i, n in enumerate(JOINTS)}
    torso = np.linalg.norm(truth[..., j["neck"], :] - truth[..., j["pelvis"], :], axis=-1)[..., None]  # (N, T, 1)
    inside = ((truth >= 0) & (truth < args.size)).all(-1)
    dist = np.linalg.norm(pred - truth, axis=-1)
    dist = np.where(np.isfinite(dist), dist, np.inf)
    found = float(np.isfinite(pred).all(-1)[inside].mean())
    print(f"# {cpu_model()}; estimator {args.estimator}; {len(clips)} clips × {args.frames} frames at {args.size} px; "
          f"joints returned: {found:.3f}")
    for alpha in (0.2, 0.5):
        ok = (dist <= alpha * torso) & inside
        print(f"PCK@{alpha}: {ok.sum() / inside.sum():.3f}")
    ok = (dist <= 0.5 * torso) & inside
    print("per joint PCK@0.5: " + ", ".join(f"{n} {ok[..., i].sum() / max(1, inside[..., i].sum()):.2f}"
                                           for i, n in enumerate(JOINTS)))


if __name__ == "__main__":
    main()
