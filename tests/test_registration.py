"""Alignment-robust scoring (issue 25, first part): a reconstruction is registered to its target over translations
of up to REGISTRATION_RADIUS pixels before it is scored, so a release that only moves pixels a little is not
private; priors are registered the same way, so noise still scores about 0 (tests/test_zero_point.py)."""

from __future__ import annotations

import torch

from privbench.core.contracts import AttackOutput
from privbench.core.specs import SplitConfig
from privbench.data import load_splits
from privbench.metrics.registration import REGISTRATION_RADIUS, register
from privbench.run.scoring import score


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
    from privbench.attacks import ATTACKS
    from privbench.core.images import ImageSet
    from privbench.core.release import Release
    from tests.conftest import run_attack

    splits = load_splits("digits", SplitConfig(private=200, aux=200, test=100, targets=40), 0)
    moved = torch.roll(splits.private.images, (1, 0), dims=(-2, -1))
    release = Release(synthetic=ImageSet(moved.contiguous(), splits.private.labels.clone()))
    result = run_attack(ATTACKS.get("nearest-neighbour")(), release, splits)
    privacy, _, _ = score(AttackOutput(reconstructions=result.output.per_gallery[result.truth]), splits, None,
                          use_lpips=False)
    assert privacy["memorized_rate"] >= 0.95, privacy


def _moved_copies(x: torch.Tensor, r: int) -> list[torch.Tensor]:
    """Independent reference: ``x (N, ..., H, W)`` under every translation of at most ``r`` px, replicated edges
    by clamped indices and wrapped ones by ``torch.roll``, the identity first."""
    h, w = x.shape[-2:]
    out = [x]
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy or dx:
                rows = (torch.arange(h) + dy).clamp(0, h - 1)
                cols = (torch.arange(w) + dx).clamp(0, w - 1)
                out += [x[..., rows, :][..., cols], torch.roll(x, (-dy, -dx), dims=(-2, -1))]
    return out


def test_the_vectorised_search_agrees_with_enumerating_every_translation() -> None:
    """register, registered_mse (value and gradient), random_shift and the shift-tolerant nearest search equal a
    plain loop over all translations, on images, multi-channel images, clips and images too small for 4 px."""
    from privbench.metrics.registration import random_shift, registered_mse, shift_tolerant_nearest

    g = torch.Generator().manual_seed(0)
    for shape, r in [((24, 1, 28, 28), 4), ((12, 3, 16, 16), 4), ((6, 2, 3, 12, 12), 4), ((10, 1, 8, 8), 3)]:
        a, b = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
        moved = _moved_copies(a, r)
        shifted = torch.stack([moved[int(i)][n] for n, i in enumerate(torch.randint(len(moved), (len(a),),
                                                                                    generator=g))])
        # register: the argmin over the enumeration, identity kept on ties
        for rec in (shifted, b):
            errs = torch.stack([((c - a) ** 2).flatten(1).sum(1) for c in _moved_copies(rec, r)], 1)
            cands = _moved_copies(rec, r)
            expect = torch.stack([cands[int(j)][n] for n, j in enumerate(errs.argmin(1))])
            assert torch.equal(register(rec, a), expect), shape
        # registered_mse: value and gradient
        pred = b.clone().requires_grad_(True)
        ref = b.clone().requires_grad_(True)
        loss = registered_mse(pred, a)
        expect = torch.stack([((ref - c) ** 2).flatten(1).mean(1) for c in moved], 1).min(1).values.mean()
        loss.backward(), expect.backward()
        assert torch.allclose(loss, expect, atol=1e-6) and torch.allclose(pred.grad, ref.grad, atol=1e-6), shape
        # random_shift: one roll per image by the drawn shift
        rolled = random_shift(a, torch.Generator().manual_seed(3), 2)
        draws = torch.randint(-2, 3, (len(a), 2), generator=torch.Generator().manual_seed(3))
        assert torch.equal(rolled, torch.stack([torch.roll(a[n], tuple(d), dims=(-2, -1))
                                                for n, d in enumerate(draws.tolist())])), shape
        # nearest: a shifted copy hidden in noise is found, and the top-5 distances match the enumeration
        pool = torch.cat([torch.rand((30,) + shape[1:], generator=g), shifted])
        dist, index = shift_tolerant_nearest(a, pool, 5, r)
        full = torch.stack([torch.cdist(a.flatten(1).double(), c.flatten(1).double(),
                                        compute_mode="donot_use_mm_for_euclid_dist")
                            for c in _moved_copies(pool, r)]).min(0).values
        assert torch.allclose(dist.double(), full.topk(5, dim=1, largest=False).values, atol=5e-2), shape
        assert torch.equal(index[:, 0], torch.arange(30, 30 + len(a))), shape
