"""Build the worked example of docs/AUDIT.md from embedded data (no download): folders of PNG images.

    python examples/audit/make_release.py --out /tmp/audit-demo [--dataset mnist5k]

- ``originals/``: 500 images of the dataset (the private set);
- ``release/``: 50 near-copies of originals (JPEG quality 75 after a one-pixel shift) among 450 other images of the
  same dataset (a "synthetic" release that leaked some training images);
- ``aux/``: 500 further images (fresh images of the same population: the baseline).
Images are upscaled to 64×64 (nearest neighbour for mnist5k's 28×28 digits).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from privbench.core.registry import DATASETS
    from privbench.run.plugins import load_builtins

    load_builtins()
    pool = DATASETS.get(args.dataset)({})
    x = (pool.images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    x = np.repeat(x, 3, -1) if x.shape[-1] == 1 else x
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x))
    originals, clean, aux = order[:500], order[500:950], order[950:1450]
    planted = rng.choice(originals, 50, replace=False)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    def big(i: int) -> np.ndarray:
        return np.asarray(Image.fromarray(x[i]).resize((64, 64), Image.Resampling.NEAREST))

    for name, idx in (("originals", originals), ("aux", aux)):
        (out / name).mkdir(parents=True)
        for i in idx:
            Image.fromarray(big(i)).save(out / name / f"{i:05d}.png")
    (out / "release").mkdir()
    for i in planted:
        buf = io.BytesIO()
        Image.fromarray(np.roll(big(i), 1, axis=1)).save(buf, "JPEG", quality=75)
        (out / "release" / f"sample-{i:05d}.jpg").write_bytes(buf.getvalue())
    for i in clean:
        Image.fromarray(big(i)).save(out / "release" / f"sample-{i:05d}.png")
    print(f"{out}: originals 500, release 500 (50 planted near-copies: *.jpg), aux 500")


if __name__ == "__main__":
    main()
