"""Alignment-robust scoring (issue 25, first part): a reconstruction is registered to its target over translations
of up to REGISTRATION_RADIUS pixels before it is scored, so a release that only moves pixels a little is not
private; priors are registered the same way, so noise still scores about 0 (tests/test_zero_point.py)."""

from __future__ import annotations

import torch

from benchmark.config import SplitConfig
from benchmark.contracts import AttackOutput
from benchmark.data import load_splits
from benchmark.metrics.registration import REGISTRATION_RADIUS, register
from benchmark.scoring import score


def _shifted(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image rolled by its own secret shift of at most 2 px on each axis."""
    out = torch.empty_like(x)
    for i in range(len(x)):
        dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
        out[i] = torch.roll(x[i], (dy, dx), dims=(-2, -1))
    return out


def test_register_undoes_small_shifts_and_leaves_aligned_images_alone() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 1, 16, 16)
    x[..., 4:12, 4:12] = torch.rand(8, 1, 8, 8, generator=g)  # a constant (black) border, like digits
    assert torch.equal(register(_shifted(x, g), x), x)
    assert torch.equal(register(x, x), x)
    clips = torch.stack([x, x], 1)  # (N, T, C, H, W): the frames of a clip move together
    moved = torch.roll(clips, (1, -2), dims=(-2, -1))
    assert torch.equal(register(moved, clips), clips)
    assert REGISTRATION_RADIUS == 4


def test_a_two_pixel_secret_shift_of_the_targets_scores_as_a_full_reconstruction() -> None:
    splits = load_splits("digits", SplitConfig(private=200, aux=200, test=100, targets=40), 0)
    originals = splits.private.images[splits.targets]
    shifted = _shifted(originals, torch.Generator().manual_seed(1))
    privacy, notes, units = score(AttackOutput(reconstructions=shifted), splits, None, use_lpips=False)
    assert privacy["ssim"] > 0.99 and privacy["memorized_rate"] == 1.0, privacy
    assert notes["scoring.registration_radius"] == "4"
    assert (units.score > units.prior).mean() > 0.95


def test_nearest_neighbour_catches_memorised_images_shifted_by_one_pixel() -> None:
    """Positive control of the memorisation audit (issue 25): a synthetic set that is the private images moved by
    1 px passed it before (+0.010); with registered scoring every original is found and scored as memorised."""
    from benchmark.contracts import ImageSet, Release
    from tests.conftest import run_attack
    from attacks import ATTACKS

    splits = load_splits("digits", SplitConfig(private=200, aux=200, test=100, targets=40), 0)
    moved = torch.roll(splits.private.images, (1, 0), dims=(-2, -1))
    release = Release(synthetic=ImageSet(moved.contiguous(), splits.private.labels.clone()))
    result = run_attack(ATTACKS.get("nearest-neighbour")(), release, splits)
    privacy, _, _ = score(AttackOutput(reconstructions=result.output.per_gallery[result.truth]), splits, None,
                          use_lpips=False)
    assert privacy["memorized_rate"] >= 0.95, privacy
