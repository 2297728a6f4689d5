"""VisualMixer: exact per-region histograms, VFE grows with strength, the adaptive histogram linkage beats pixel
linkage, clear errors for unreachable targets and untileable images."""

from __future__ import annotations

import pytest
import torch

from privbench.attacks.histogram import HistogramLinkage
from privbench.attacks.linkage import Linkage
from privbench.core.contracts import RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.release import Release
from privbench.core.specs import SplitConfig
from privbench.data import load_splits
from privbench.defenses.visualmixer import STAdam, VisualMixer, to_blocks
from privbench.metrics import linkage_scores
from privbench.metrics.vfe import max_vfe, normalized_vfe, visual_feature_entropy
from tests.conftest import run_attack


@pytest.fixture(scope="module")
def patches():
    return load_splits("photo-patches", SplitConfig(private=300, aux=300, test=50, targets=300), 0)


def _mix(x, target, seed=0):
    return VisualMixer(VisualMixer.Params(target_vfe=target)).mix(x, torch.Generator().manual_seed(seed))


def test_shuffling_preserves_every_region_histogram_exactly(patches) -> None:
    x = patches.private.images[:64]
    out, side, _ = _mix(x, 0.6)
    assert not torch.equal(out, x)
    for i in range(len(x)):
        s = int(side[i])
        a = to_blocks(x[i:i + 1], s).sort(-1).values
        b = to_blocks(out[i:i + 1], s).sort(-1).values
        assert torch.equal(a, b), f"image {i}: region multiset changed at side {s}"


def test_vfe_grows_with_strength_and_reaches_target(patches) -> None:
    x = patches.private.images[:200]
    means = []
    for target in (0.3, 0.45, 0.6):
        out, _, reached = _mix(x, target)
        v = normalized_vfe(out)
        assert reached.float().mean() > 0.3
        assert torch.all(v[reached] >= target - 1e-6)
        means.append(float(visual_feature_entropy(out).mean()))
    assert float(visual_feature_entropy(x).mean()) < means[0] < means[1] < means[2] <= max_vfe((3, 32, 32))


def test_vfe_of_smooth_vs_noisy_images() -> None:
    flat = torch.full((2, 3, 32, 32), 0.5)
    noisy = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.all(visual_feature_entropy(flat) == 0)
    assert torch.all(normalized_vfe(noisy) > 0.7)


def test_secret_keys_differ_per_call(patches) -> None:
    x = patches.private.images[:8]
    a, _, _ = _mix(x, 0.6, seed=1)
    b, _, _ = _mix(x, 0.6, seed=2)
    assert not torch.equal(a, b)


def test_histogram_linkage_beats_pixel_linkage_on_shuffled_images(patches) -> None:
    defense = VisualMixer(VisualMixer.Params(target_vfe=0.6))
    ctx = RunContext(seed=0, device=torch.device("cpu"), task=TaskConfig())
    release = defense.build(patches, ctx)
    data_only = Release(data=release.data)
    hist = run_attack(HistogramLinkage(), data_only, patches)
    pixel = run_attack(Linkage(Linkage.Params(epochs=0)), data_only, patches)
    n = len(patches.private)
    h = linkage_scores(hist.output.rankings["histogram"], hist.truth, n)["top1"]
    p = linkage_scores(pixel.output.rankings["pixel"], pixel.truth, n)["top1"]
    assert h >= 0.95 and h > p + 0.2, (h, p)


def test_unreachable_target_is_a_clear_error() -> None:
    digits = load_splits("mnist5k", SplitConfig(private=50, aux=10, test=10, targets=5), 0)
    with pytest.raises(InputError, match=r"target_vfe=0.95 is outside the reachable range \[.*\] for images"):
        _mix(digits.private.images, 0.95)
    with pytest.raises(InputError, match="must lie in"):
        VisualMixer.Params(target_vfe=1.5)


def test_image_that_no_region_tiles_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="no region size"):
        _mix(torch.rand(2, 3, 5, 7), 0.5)


def test_st_adam_is_unbiased_for_a_constant_gradient() -> None:
    p = torch.nn.Parameter(torch.zeros(4))
    opt = STAdam([p], lr=0.1)
    for step in range(1, 6):
        p.grad = torch.ones(4)
        opt.step()
        assert torch.allclose(p.data, torch.full((4,), -0.1 * step), atol=1e-5)


@pytest.mark.parametrize("dataset,target", [("mnist5k", 0.3), ("faces", 0.4), ("photo-patches", 0.5)])
def test_grey_and_colour_datasets(dataset: str, target: float) -> None:
    s = load_splits(dataset, SplitConfig(private=60, aux=10, test=10, targets=5), 0)
    out, side, reached = _mix(s.private.images, target)
    assert out.shape == s.private.images.shape and reached.float().mean() > 0.5
    assert torch.equal(out.flatten(1).sort(1).values, s.private.images.flatten(1).sort(1).values)
