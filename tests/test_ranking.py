"""Ranking sanity on real MNIST digits: the undefended release leaks, the strongest noise does not, and blur and
pixelation trade privacy for utility as their strength grows."""

from __future__ import annotations

import pytest

from privbench.core.records import iter_records
from privbench.run.config import load_suite
from privbench.run.runner import run_suite
from privbench.run.worker import RunOptions
from tests.conftest import write_suite

# 60 s of the default run's 2-core budget; the same orderings are asserted on every board by `report --check`'s
# competence and zero-point gates and by tests/test_zero_point.py on scored extremes
pytestmark = pytest.mark.slow

SUITE = """
name: ranking
datasets: [mnist5k]
seeds: [0]
splits: {private: 500, aux: 600, test: 400, targets: 500}
task: {model: convnet, width: 12, epochs: 5}
defenses:
  - id: none
  - id: blur
    sweep: {sigma: [1.0, 4.0]}
  - id: pixelate
    sweep: {block: [2, 7]}
  - id: noise
    params: {sigma: 16.0}
attacks:
  - id: inversion-decoder
    params: {epochs: 3, width: 8}
  - id: linkage
    params: {epochs: 3, width: 8}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[tuple[str, float | None, str], dict]:
    tmp = tmp_path_factory.mktemp("ranking")
    suite = load_suite(write_suite(tmp / "ranking.yaml", SUITE))
    run_suite(suite, RunOptions(out=tmp / "out", jobs=2, progress=False))
    out = {}
    for _, r in iter_records(tmp / "out" / "records"):
        assert r["status"] == "ok", r.get("reason")
        s = r["defense"]["strength"]
        out[(r["defense"]["id"], None if s is None else s["value"], r["attack"]["id"])] = r["metrics"]
    return out


def test_none_is_least_private(results) -> None:
    """The identity release: calibrated advantage ≈ 1 under both threat models, the most of any defense."""
    assert results[("none", None, "inversion-decoder")]["privacy"]["psnr"] >= 30.0
    assert results[("none", None, "linkage")]["privacy"]["top1"] >= 0.95
    for attack in ("inversion-decoder", "linkage"):
        assert results[("none", None, attack)]["calibrated"]["advantage"] >= 0.9
    adv = {k: m["calibrated"]["advantage"] for k, m in results.items()}
    assert all(adv[("none", None, a)] >= v - 1e-9 for (d, s, a), v in adv.items())


def test_strongest_noise_is_private_and_useless(results) -> None:
    """Noise σ=16 carries (almost) no information: the calibrated advantage is ≈ 0 (the raw SSIM is not: a decoder
    learns the mean image), and the task model is near chance."""
    link = results[("noise", 16.0, "linkage")]["privacy"]
    # Clipping to [0, 1] keeps a trace of each pixel (P(out = 1) grows with the pixel), so a few targets of 500
    # still link (0.8% at chance 0.2%): nearly private, not perfectly.
    assert link["top1"] <= 0.02
    inv = results[("noise", 16.0, "inversion-decoder")]["calibrated"]
    assert inv["raw"] > 0.05 and abs(inv["advantage"]) <= 0.05, inv
    assert abs(results[("noise", 16.0, "linkage")]["calibrated"]["advantage"]) <= 0.02
    assert results[("noise", 16.0, "linkage")]["utility"]["top1"] <= 0.2  # 10 classes: chance is 0.1


@pytest.mark.parametrize("defense,weak,strong", [("blur", 1.0, 4.0), ("pixelate", 2, 7)])
def test_more_strength_more_privacy_less_utility(results, defense: str, weak: float, strong: float) -> None:
    w_inv, s_inv = results[(defense, weak, "inversion-decoder")], results[(defense, strong, "inversion-decoder")]
    w_link, s_link = results[(defense, weak, "linkage")], results[(defense, strong, "linkage")]
    assert s_inv["privacy"]["psnr"] < w_inv["privacy"]["psnr"] - 3.0
    assert s_link["privacy"]["top1"] < w_link["privacy"]["top1"]
    assert s_inv["calibrated"]["advantage"] < w_inv["calibrated"]["advantage"]
    assert s_link["calibrated"]["advantage"] < w_link["calibrated"]["advantage"]
    assert s_inv["utility"]["top1"] < w_inv["utility"]["top1"]
