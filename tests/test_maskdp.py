"""MaskDP's residual mechanism: its sensitivity to the sensitive region (zero-out: C, substitution: 2C), what it
does not cover (the rest of the clip), an empirical canary audit against the ε it records, and a leaky variant
that the same audit catches."""

from __future__ import annotations

import math

import pytest
import torch

from privbench.defenses.maskdp import FILL, blank, residual_update, substitution
from privbench.models import build_model
from privbench.ops.accounting import poisson_gaussian

C, SIGMA = 0.5, 2.0  # C: default clipping norm of the helpers; tests calibrate their own


def _model() -> torch.nn.Module:
    torch.manual_seed(0)  # a local test fixture; the benchmark itself never seeds the global RNG
    model = build_model("clipnet", 4 * 3, 5, width=4, bn=False)
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 4, 3, 12, 12, generator=g)
    person = torch.zeros(6, 4, 1, 12, 12, dtype=torch.bool)
    person[..., 3:9, 4:8] = True
    y = torch.randint(0, 5, (6,), generator=g)
    return x, person, y


def _clip_norm(model, x, public, y) -> float:
    """A quarter of sample 0's residual norm: clipping is active, as it is in training with a sensible C."""
    residual = _update(model, x[:1], public[:1], y[:1], sigma=0.0, c=1e9) - _update(
        model, public[:1], public[:1], y[:1], sigma=0.0, c=1e9)
    return float(residual.norm()) / 4


def _update(model, x, public, y, seed: int = 0, sigma: float = SIGMA, c: float = C) -> torch.Tensor:
    u = residual_update(model, x, public, y, c, sigma, torch.Generator().manual_seed(seed), 1.0)
    return torch.cat([v.flatten() for v in u.values()])


def test_sensitive_region_sensitivity_is_c_zero_out_and_2c_substitution(batch) -> None:
    x, person, y = batch
    model = _model()
    background = ~person
    public = blank(x, background)
    c = _clip_norm(model, x, public, y)
    base = _update(model, x, public, y, sigma=0.0, c=c)
    # zero-out: sample 0's background replaced by the fill -> its clipped residual (norm exactly c) vanishes
    zeroed = x.clone()
    zeroed[0] = blank(x[:1], background[:1])[0]
    d_zero = float((_update(model, zeroed, public, y, sigma=0.0, c=c) - base).norm())
    assert d_zero == pytest.approx(c, rel=1e-3)
    # substitution: sample 0's background replaced by other content; bounded by 2c, not by c
    other = x.clone()
    other[0] = torch.where(background[0].expand_as(x[0]), 1 - x[0], x[0])
    d_sub = float((_update(model, other, public, y, sigma=0.0, c=c) - base).norm())
    assert c < d_sub <= 2 * c + 1e-4
    # what the guarantee does not cover: the person (public part) moves the update without a bound
    moved = x.clone()
    moved[0] = torch.where(person[0].expand_as(x[0]), 1 - x[0], x[0])
    new_public = blank(moved, background)
    d_person = float((_update(model, moved, new_public, y, sigma=0.0, c=c) - base).norm())
    assert d_person > 2 * c


def _audit(model, x, x_neighbour, public, public_neighbour, y, c: float, draws: int = 4000) -> float:
    """An empirical lower bound on ε from a canary: the best threshold test on the update projected onto the
    direction between the two neighbouring batches' noise-free updates (δ = 1e-5)."""
    a0 = _update(model, x, public, y, sigma=0.0, c=c)
    b0 = _update(model, x_neighbour, public_neighbour, y, sigma=0.0, c=c)
    direction = (b0 - a0) / (b0 - a0).norm().clamp_min(1e-12)
    g = torch.Generator().manual_seed(7)
    std = SIGMA * c
    # the projection of isotropic Gaussian noise onto a unit vector is N(0, std^2)
    pa = float(a0 @ direction) + std * torch.randn(draws, generator=g, dtype=torch.float64)
    pb = float(b0 @ direction) + std * torch.randn(draws, generator=g, dtype=torch.float64)
    best = 0.0
    for t in torch.quantile(pb, torch.linspace(0.01, 0.5, 50, dtype=torch.float64)):
        tpr = float((pb >= t).double().mean())
        fpr = float((pa >= t).double().mean())
        if fpr > 0 and tpr - 1e-5 > 0:
            best = max(best, math.log((tpr - 1e-5) / fpr))
    return best


def test_canary_in_the_background_stays_within_the_recorded_epsilon_and_a_leaky_variant_does_not(batch) -> None:
    x, person, y = batch
    model = _model()
    background = ~person
    public = blank(x, background)
    # A flickering canary in sample 0's background (a static one would vanish in clipnet's motion input).
    flicker = (torch.rand(x[0].shape, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    canary = x.clone()
    canary[0] = torch.where(background[0].expand_as(x[0]), flicker, x[0])
    zeroed = x.clone()
    zeroed[0] = blank(x[:1], background[:1])[0]
    eps_one_step = poisson_gaussian(SIGMA, 1.0, 1, 1e-5).epsilon  # q = 1, one step: the recorded accountant's ε
    c = _clip_norm(model, canary, public, y)
    measured = _audit(model, canary, zeroed, public, public, y, c)
    assert measured <= eps_one_step
    # Leaky variant: the "public" term computed from the full clip (the sensitive content enters unclipped).
    leaky = _audit(model, canary, zeroed, canary, zeroed, y, c)
    assert leaky > eps_one_step


def test_substitution_is_covered_by_the_group_privacy_bound(batch) -> None:
    """Replacing a sample's sensitive content by other content (not by the fill) is two zero-out steps: the record's
    ``epsilon_substitution`` = 2ε bounds the same canary audit."""
    x, person, y = batch
    model = _model()
    background = ~person
    public = blank(x, background)
    flicker = (torch.rand(x[0].shape, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    bright, dark = x.clone(), x.clone()
    bright[0] = torch.where(background[0].expand_as(x[0]), flicker, x[0])
    dark[0] = torch.where(background[0].expand_as(x[0]), 1 - flicker, x[0])
    eps = poisson_gaussian(SIGMA, 1.0, 1, 1e-5).epsilon
    eps_sub, delta_sub = substitution(eps, 1e-5)
    assert eps_sub == 2 * eps and delta_sub > 1e-5
    measured = _audit(model, bright, dark, public, public, y, _clip_norm(model, bright, public, y))
    assert measured <= eps_sub
    assert FILL == 0.5  # the zero-out neighbour is the data-independent fill


def test_avatar_public_clip_never_reads_the_background() -> None:
    """avatar + MaskDP: x_pub draws the same avatars on the constant, so changing only the background (the
    sensitive region) leaves it unchanged, anti-aliased edges included; other estimators are refused."""
    from privbench.core.errors import InputError
    from privbench.core.specs import SplitConfig
    from privbench.data import load_splits
    from privbench.defenses.maskdp import MaskDP

    s = load_splits("synthetic-actions", SplitConfig(private=20, aux=10, test=10, targets=4, scale="fit"), 0,
                    {"identities": 6, "clips_per_identity": 6, "frames": 4, "size": 32})
    x = s.private.subset(torch.arange(4))
    other = torch.rand(x.images.shape, generator=torch.Generator().manual_seed(5))
    y = x.replace_images(torch.where(x.masks.expand_as(x.images), x.images, other))  # new background only
    defense = MaskDP(MaskDP.Params(anonymise="avatar", target_epsilon=1.0))
    (train_x, pub_x), (train_y, pub_y) = defense.training_clips(x), defense.training_clips(y)
    assert torch.equal(pub_x, pub_y)
    assert not torch.equal(train_x.images, train_y.images)  # the released avatar clips do show the background
    with pytest.raises(InputError, match="ground-truth"):
        MaskDP.Params(estimator="hog")
