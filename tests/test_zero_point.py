"""The zero point of calibrated leakage, end to end with a third-party plugin: a defense whose release is uniform
noise independent of the input has a calibrated advantage ≈ 0 under every threat model that applies (observer,
linker), while the identity release (``none``) has ≈ 1 — although the noise release's *raw* scores are far from 0
(a decoder still learns the mean image)."""

from __future__ import annotations

from privbench.core.records import iter_records
from privbench.run.config import load_suite
from privbench.run.plugins import load_plugins
from privbench.run.runner import run_suite
from privbench.run.worker import RunOptions
from tests.conftest import write_suite

PLUGIN = '''
import torch
from privbench.core.threats import ThreatModel
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense


@DEFENSES.register("uniform-noise-test")
class UniformNoise(InputDefense):
    """Releases U(0, 1) noise of the input's shape: no information about the input at all."""

    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER})

    def apply(self, images, generator):
        return torch.rand(images.shape, generator=generator)
'''

SUITE = """
name: zero
datasets: [mnist5k]
seeds: [0, 1]
splits: {private: 400, aux: 400, test: 200, targets: 200}
task: {model: convnet, width: 4, epochs: 1}
defenses: [none, uniform-noise-test]
attacks:
  - id: inversion-decoder
    params: {epochs: 3, width: 8}
  - id: linkage
    params: {epochs: 2, width: 8}
  - nearest-neighbour
  - histogram-linkage
"""


def test_uniform_noise_scores_zero_and_identity_scores_one(tmp_path) -> None:
    plugin = tmp_path / "uniform_noise_plugin.py"
    plugin.write_text(PLUGIN)
    load_plugins((str(plugin),))
    suite = load_suite(write_suite(tmp_path / "zero.yaml", SUITE))
    run_suite(suite, RunOptions(out=tmp_path / "out", jobs=1, progress=False, use_lpips=False,
                                plugins=(str(plugin),)))
    cells: dict[tuple[str, str], list[dict]] = {}
    for _, r in iter_records(tmp_path / "out" / "records"):
        assert r["status"] == "ok", (r["cell_id"], r.get("reason"))
        cells.setdefault((r["defense"]["id"], r["attack"]["id"]), []).append(r["metrics"]["calibrated"])
    assert {t for d, a in cells for t in [a]} == {"inversion-decoder", "linkage", "nearest-neighbour",
                                                   "histogram-linkage"}
    for (defense, attack), per_seed in sorted(cells.items()):
        mean = sum(c["advantage"] for c in per_seed) / len(per_seed)
        se = max(c["se"] for c in per_seed)
        if defense == "none":
            assert mean >= 0.9, (attack, per_seed)
        else:
            # |mean| <= 0.05, or within 2 standard errors of 0 (the CI includes 0)
            assert abs(mean) <= max(0.05, 2 * se), (attack, per_seed)
    raw = [c["raw"] for c in cells[("uniform-noise-test", "inversion-decoder")]]
    assert min(raw) > 0.05  # raw SSIM is not 0: the zero point is the prior, not the raw score
