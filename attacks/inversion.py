"""Learned inversion of released images or representations (adaptive, black-box).

Image releases: the attacker runs the defense's public ``transform`` (fresh secret randomness each epoch) on its own
aux images, trains a U-Net decoder from released to original on those pairs, and applies it to the targets' released
versions. Representation releases (split computing): the attacker queries the served ``encoder`` on aux images,
trains a fresh decoder from representation to image after the defense is frozen, and applies it to the targets'
representations decoded from the intercepted ``bitstream``. This is the standard adaptive "learned inversion"
adversary (e.g. He et al., ACSAC 2019, model inversion against split learning; Azizian & Bajić, PCS 2022, for
learned feature inversion). The decoder trains on 90% of aux; on the other 10% the attacker picks the blend
``α·decoder + (1−α)·(aux mean image)`` with the best SSIM (:func:`shrinkage`): a competent attacker never does worse
than its release-independent guess, so a decoder that learned nothing from an uninformative release (noise) scores
at the no-release prior, not below it.

Mask releases (``mask-inversion``): the removed-pixel mask alone is inverted. Interpretation masking (Li et al.,
arXiv 2312.08975) derives each mask from a per-class critical template, so the mask reveals the predicted class and
where that class's content is. The attacker masks its aux images with the defense's public algorithm and decodes a
target's mask as the mean of the aux images with the nearest masks (k-NN regression, i.e. ``E[x | mask]``): a
class-shaped image. (A U-Net decoder trained on the same pairs needs far more epochs to learn this lookup.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from privbench.attacks.nets import TrainBudget, UNetDecoder, fit_decoder, shift_pairs
from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView
from privbench.core.errors import InputError
from privbench.core.images import Access, Surface
from privbench.core.registry import ATTACKS
from privbench.core.seeding import seeded
from privbench.core.threats import ThreatModel
from privbench.metrics.registration import REGISTRATION_RADIUS, register
from privbench.models import map_batched


@ATTACKS.register("inversion-decoder")
class InversionDecoder(Attack):
    """Adaptive learned inversion: U-Net trained on (transform(aux), aux) pairs, applied to released targets."""

    threat = ThreatModel.OBSERVER
    requires: frozenset[Surface] = frozenset()
    uses = frozenset({Surface.DATA, Surface.TRANSFORM, Surface.ENCODER, Surface.BITSTREAM})
    access = Access.BLACK_BOX
    adaptive = True
    positive_controls = {"secret-shift": 0.9, "keyed-permutation": 0.9}
    _MODES = (frozenset({Surface.DATA, Surface.TRANSFORM}), frozenset({Surface.ENCODER, Surface.BITSTREAM}))

    @classmethod
    def requirements(cls) -> str:
        return " or ".join(",".join(sorted(s.value for s in mode)) for mode in cls._MODES)

    def compatible(self, surfaces: frozenset[Surface]) -> Optional[str]:
        if any(mode <= surfaces for mode in self._MODES):
            return None
        return "release lacks data+transform and encoder+bitstream"

    @dataclass(frozen=True)
    class Params(TrainBudget):
        """``linear``: also fit a ridge-regression inverse (kept when it beats the U-Net on held-out aux)."""

        linear: bool = True

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        rel, p = view.release, self.params
        if rel.encoder is not None and rel.bitstream is not None:
            encoder = rel.encoder.to(ctx.device).eval()
            released_targets = rel.bitstream.decode([rel.bitstream.payloads[i] for i in view.targets.tolist()])

            def make_inputs(aux: torch.Tensor, g: torch.Generator) -> torch.Tensor:
                return map_batched(encoder, aux, ctx.device)
        else:
            assert rel.data is not None and rel.transform is not None
            transform = rel.transform
            released_targets = rel.data.images[view.targets]

            def make_inputs(aux: torch.Tensor, g: torch.Generator) -> torch.Tensor:
                return transform(aux)  # the defender draws fresh secret randomness on every query
        c, h, w = view.image_shape
        train, val = _holdout(view.aux.images, ctx.generator("decoder-holdout"))
        with seeded(ctx.generator("decoder-init")):
            net = UNetDecoder(released_targets.shape[1], c, (h, w), p.width)
        same_grid = tuple(released_targets.shape[-2:]) == (h, w)
        fit_decoder(net, train, make_inputs, ctx, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, salt=101,
                    augment=shift_pairs if same_grid else None, registered=REGISTRATION_RADIUS)
        decoders = {"unet": lambda x: map_batched(net, x, ctx.device).clamp(0, 1)}
        if p.linear:
            probes = probe_images(train, released_targets[0].numel())
            lin = linear_inverse(make_inputs(probes, ctx.generator("decoder-linear")), probes)
            if lin is not None:
                decoders["linear"] = lin
        # model selection on the attacker's own held-out aux, scored as the runner scores (registered SSIM)
        val_inputs = make_inputs(val, ctx.generator("decoder-val"))
        fit = {name: _registered_ssim(dec(val_inputs), val) for name, dec in decoders.items()}
        chosen = max(sorted(fit), key=lambda name: fit[name])
        mean = train.mean(0, keepdim=True)
        alpha = shrinkage(decoders[chosen](val_inputs), mean, val)
        decoded = decoders[chosen](released_targets)
        return AttackOutput(reconstructions=alpha * decoded + (1 - alpha) * mean,
                            extra={"shrinkage_alpha": alpha, "linear_chosen": float(chosen == "linear"),
                                   **{f"val_ssim_{name}": v for name, v in fit.items()}})


def _registered_ssim(rec: torch.Tensor, originals: torch.Tensor) -> float:
    from privbench.metrics.image import ssim

    return float(ssim(register(rec, originals), originals).mean())


def probe_images(aux: torch.Tensor, input_dim: int, ratio: float = 1.5, variants: int = 8) -> torch.Tensor:
    """The attacker's queries for the linear inverse: its aux images ``(N,C,H,W)`` and, until there are ``ratio``
    times as many as the release has dimensions (``input_dim``), their flips, 180° rotation and circular shifts by
    4 px (at most ``variants`` sets). The transform is queried on attacker-chosen images (Kerckhoffs), so more
    pairs cost only queries, and a regression with fewer pairs than dimensions cannot be exact."""
    sets = [aux, aux.flip(-1), aux.flip(-2), aux.flip(-1, -2), torch.roll(aux, (4, 4), (-2, -1)),
            torch.roll(aux, (-4, 4), (-2, -1)), torch.roll(aux, (4, -4), (-2, -1)), torch.roll(aux, (-4, -4), (-2, -1))]
    need = max(1, min(variants, -(-int(ratio * input_dim) // max(1, len(aux)))))
    return torch.cat(sets[:need]).contiguous()


#: Largest ``inputs × outputs`` dimension product for which the linear inverse is fitted (its weight matrix).
LINEAR_MAX = 4096 * 4096


def linear_inverse(inputs: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-3):
    """Ridge regression from flattened ``inputs (N, ...)`` to flattened ``targets (N, C, H, W)`` (with intercept;
    ``ridge`` relative to the mean eigenvalue of the inputs' covariance; the dual form when N < D). Returns the
    decoder ``x -> (n, C, H, W)`` in [0, 1], or ``None`` when the weight matrix would exceed :data:`LINEAR_MAX`.

    A defense that is linear in its input (a keyed pixel permutation, a fixed mixing matrix) is inverted exactly
    by it from aux pairs; a U-Net's local convolutions cannot learn a global permutation."""
    x, y = inputs.flatten(1).double(), targets.flatten(1).double()
    n, d = x.shape
    if d * y.shape[1] > LINEAR_MAX or n < 2:
        return None
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    lam = ridge * float(xc.pow(2).sum()) / (n * d) + 1e-12
    if n < d:
        w = xc.T @ torch.linalg.solve(xc @ xc.T + lam * n * torch.eye(n, dtype=x.dtype), yc)
    else:
        w = torch.linalg.solve(xc.T @ xc + lam * n * torch.eye(d, dtype=x.dtype), xc.T @ yc)
    shape = targets.shape[1:]

    def decode(z: torch.Tensor) -> torch.Tensor:
        return ((z.flatten(1).double() - mx) @ w + my).float().clamp(0, 1).view(-1, *shape)

    return decode


#: Weights of the decoder's output in the blend with the aux mean image, chosen on the attacker's held-out aux.
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _holdout(aux: torch.Tensor, g: torch.Generator, share: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the attacker's aux images ``(N,C,H,W)`` into a training part and a held-out part (``share``, ≥ 8)."""
    n_val = max(8, int(len(aux) * share))
    perm = torch.randperm(len(aux), generator=g)
    return aux[perm[n_val:]], aux[perm[:n_val]]


def shrinkage(decoded: torch.Tensor, mean: torch.Tensor, originals: torch.Tensor) -> float:
    """The blend weight ``α`` in :data:`ALPHAS` whose ``α·decoded + (1−α)·mean`` has the highest registered SSIM
    (as the runner scores) to the attacker's own held-out ``originals (N,C,H,W)``: model selection on aux, so a
    decoder that learned nothing from an uninformative release falls back to the release-independent guess instead
    of scoring below it."""
    scores = [_registered_ssim(a * decoded + (1 - a) * mean.expand_as(decoded), originals) for a in ALPHAS]
    return ALPHAS[max(range(len(ALPHAS)), key=lambda i: (scores[i], i))]


def _chunks(n: int, size: int = 256) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def mask_regression(masks: torch.Tensor, aux_masks: torch.Tensor, aux: torch.Tensor, neighbours: int) -> torch.Tensor:
    """k-NN regression from mask to image: for each removed-mask ``(N,1,H,W)`` (true = removed), the mean of the aux
    images ``(M,C,H,W)`` in [0, 1] whose masks ``(M,1,H,W)`` are within the ``neighbours``-th smallest Hamming
    distance (ties included). When masks repeat (one per class template), this is the exact mean of the aux images
    sharing the target's mask: the MSE-optimal estimate ``E[x | mask]``. Returns ``(N,C,H,W)`` in [0, 1]."""
    a = aux_masks.flatten(1).float()
    k = min(neighbours, len(a))
    out = []
    for part in _chunks(len(masks)):
        t = masks[part].flatten(1).float()
        dist = t.sum(1, keepdim=True) + a.sum(1) - 2 * t @ a.T  # (n, M) Hamming distances
        near = (dist <= dist.kthvalue(k, dim=1, keepdim=True).values).float()
        out.append((near @ aux.flatten(1)) / near.sum(1, keepdim=True))
    return torch.cat(out).view(len(masks), *aux.shape[1:]).clamp(0, 1)


def mask_compatible_mean(masks: torch.Tensor, aux: torch.Tensor, neighbours: int) -> torch.Tensor:
    """Mask-only inversion without aux masks: for each removed-mask ``(N,1,H,W)`` (true = removed), the mean of the
    ``neighbours`` aux images ``(M,C,H,W)`` in [0, 1] with the smallest share of their energy inside the removed
    region (the aux images whose content fits where the mask kept pixels). Returns ``(N,C,H,W)`` in [0, 1]."""
    energy = aux.pow(2).sum(1).flatten(1)  # (M, H*W)
    share_of = energy / energy.sum(1, keepdim=True).clamp_min(1e-12)
    k = min(neighbours, len(aux))
    out = []
    for part in _chunks(len(masks)):
        share = masks[part].flatten(1).float() @ share_of.T  # (n, M): share of each aux image's energy removed
        out.append(aux[share.topk(k, dim=1, largest=False).indices].mean(1))
    return torch.cat(out)


@ATTACKS.register("mask-inversion")
class MaskInversion(Attack):
    """Mask-only inversion: k-NN regression mask -> image fitted on aux masked by the defense's public algorithm."""

    threat = ThreatModel.OBSERVER
    requires = frozenset({Surface.MASK})
    uses = frozenset({Surface.TRANSFORM})
    access = Access.BLACK_BOX
    adaptive = True
    positive_controls = {"shape-mask": 0.4}

    @dataclass(frozen=True)
    class Params:
        """``neighbours``: aux images averaged per target (more when several aux masks tie at that distance)."""

        neighbours: int = 32

        def __post_init__(self) -> None:
            if self.neighbours < 1:
                raise InputError(f"neighbours must be >= 1, got {self.neighbours}")

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        """Reconstructions ``(N_targets, C, H, W)`` in [0, 1] from the targets' masks ``(N_targets, 1, H, W)``.

        With the ``transform`` surface the attacker masks its aux images with the defense's public algorithm (one
        query, fresh secret randomness) and decodes each target's mask by :func:`mask_regression`; without it, by
        :func:`mask_compatible_mean`.
        """
        rel, aux, k = view.release, view.aux.images, self.params.neighbours
        assert rel.mask is not None
        masks = rel.mask[view.targets]
        if rel.transform is None or not rel.transform.has_mask:
            return AttackOutput(reconstructions=mask_compatible_mean(masks, aux, k))
        aux_masks = rel.transform.with_mask(aux)[1]
        if tuple(aux_masks.shape[1:]) != tuple(masks.shape[1:]):
            raise InputError(f"mask-inversion: aux masks are {tuple(aux_masks.shape[1:])}, the released masks "
                             f"{tuple(masks.shape[1:])}")
        return AttackOutput(reconstructions=mask_regression(masks, aux_masks, aux, k))
