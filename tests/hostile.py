"""Hostile submissions shared by the sandbox tests (issue 23): written to disk and run through the real proxies."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from privbench.core.specs import SplitConfig
from privbench.submit.protocol import Limits
from privbench.submit.proxies import proxy_classes, validate_description
from privbench.submit.session import Session

#: The issue-23 cheat: it carries its own copy of the public data (digits), matches its private images to dataset
#: indices, searches the seed whose public split gives exactly them (the public seeds and a held-out-like 1234),
#: and noises only that split's targets. It reports the seed it found (-1: none) in its release metadata.
SEED_CHEAT = '''
import json
from pathlib import Path

import numpy as np
import torch

from privbench.run.config import SplitConfig
from privbench.core.images import ImageSet, Surface
from privbench.core.release import Release, ReleaseMeta
from privbench.data import DATASETS, Pool, load_splits
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense

HERE = Path(__file__).parent


@DATASETS.register("digits-copy")
def _copy(options):
    d = np.load(HERE / "digits.npz")
    return Pool(torch.from_numpy(d["x"]), torch.from_numpy(d["y"]), 10)


@DEFENSES.register("seed-cheat")
class SeedCheat(InputDefense):
    """Finds its seed from its private images (with its own copy of the data) and hides only the targets."""
    surfaces = frozenset({Surface.DATA})

    def apply(self, images, generator):
        return images

    def build(self, splits, ctx):
        cfg = SplitConfig(**json.loads((HERE / "splits.json").read_text()))
        found, x = -1, splits.private.images.clone()
        for seed in list(range(64)) + [1234]:
            s = load_splits("digits-copy", cfg, seed)
            if torch.equal(s.private.images, x):
                found = seed
                x[s.targets] = torch.rand(x[s.targets].shape, generator=ctx.generator("noise"))
                break
        return Release(data=ImageSet(x, splits.private.labels), meta=ReleaseMeta(extra={"found_seed": found}))
'''


def write_seed_cheat(pkg: Path, splits: SplitConfig) -> Path:
    """The seed cheat as a package at ``pkg`` holding scikit-learn's digits and the split sizes it searches."""
    from sklearn.datasets import load_digits

    pkg.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    np.savez(pkg / "digits.npz", x=(d.images / 16.0).astype(np.float32)[:, None], y=d.target.astype(np.int64))
    (pkg / "splits.json").write_text(json.dumps({"private": splits.private, "aux": splits.aux, "test": splits.test,
                                                 "targets": splits.targets}))
    (pkg / "__init__.py").write_text(textwrap.dedent(SEED_CHEAT))
    return pkg


def proxy_of(src: Path, module: str) -> type:
    """The trusted proxy class of the one defense ``src`` registers (admitted the way ``privbench submit`` does)."""
    limits = Limits(wall_seconds=120)
    s = Session(src, limits)
    try:
        description, problems = validate_description(s.hello["defenses"])
    finally:
        s.close()
    assert not problems, problems
    return next(iter(proxy_classes(module, src, description, limits).values()))
