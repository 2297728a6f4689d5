"""What both DP audits share (:mod:`privbench.ops.dpaudit`, :mod:`privbench.ops.onerun`): the auditor's probe model
and canaries, the canaries' gradient directions, an update's projection on them, Clopper–Pearson bounds and the
ε they give, and the :class:`AuditResult` both return."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.errors import InputError
from privbench.core.release import StepData, TrainingStep
from privbench.core.seeding import derive_seed


@dataclass(frozen=True)
class AuditResult:
    """An empirical lower bound ``epsilon_lower`` at ``confidence`` beside the ``claimed`` ε at ``delta``."""

    method: str
    epsilon_lower: float
    claimed: float
    delta: float
    confidence: float
    trials: int
    seconds: float
    details: dict[str, float] = field(default_factory=dict)

    @property
    def violated(self) -> bool:
        """The claim is refuted: the lower bound exceeds it."""
        return self.epsilon_lower > self.claimed

    @property
    def tightness(self) -> float:
        """``ε̂ / ε``: 1 = the audit shows the whole claim, 0 = nothing."""
        return self.epsilon_lower / self.claimed if self.claimed > 0 else math.inf

    def as_dict(self) -> dict[str, object]:
        return {"method": self.method, "epsilon_lower": self.epsilon_lower, "claimed": self.claimed,
                "delta": self.delta, "confidence": self.confidence, "trials": self.trials,
                "seconds": self.seconds, "violated": self.violated, **self.details}


class _Centre(nn.Module):
    def __init__(self, at: float, gain: float) -> None:
        super().__init__()
        self.at, self.gain = at, gain

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.at) * self.gain


def probe_model(shape: tuple[int, ...], classes: int, centre: float = 0.5, gain: float = 10.0) -> nn.Module:
    """The auditor's model: ``gain·(x − centre)``, flattened, one linear layer initialised at zero. A white-box
    adversary chooses the model: random canaries' gradients are near-orthogonal, and the gain makes every
    unclipped term (a public gradient) stand far above the noise, so "was the canary sampled?" is visible
    wherever the mechanism shows it."""
    model = nn.Sequential(_Centre(centre, gain), nn.Flatten(), nn.Linear(math.prod(shape), classes))
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
    return model


def canary_data(shape: tuple[int, ...], n: int, classes: int, generator: torch.Generator,
                fill: Optional[float] = None) -> StepData:
    """``n`` random canaries ``(n, *shape)`` with pixels in {0, 1} and random labels; with ``fill``, also their
    blanked views: the sensitive region (everything outside the central half of each frame, a "background") set
    to ``fill``."""
    images = (torch.rand((n, *shape), generator=generator) < 0.5).float()
    labels = torch.randint(0, classes, (n,), generator=generator)
    if fill is None:
        return StepData(images, labels)
    h, w = shape[-2:]
    person = torch.zeros((h, w), dtype=torch.bool)
    person[h // 4:h - h // 4, w // 4:w - w // 4] = True
    return StepData(images, labels, torch.where(person, images, torch.full_like(images, fill)))


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided ``1 − alpha`` Clopper–Pearson interval of a binomial rate with ``k`` successes in ``n``."""
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def epsilon_from_rates(tp: int, n_pos: int, fp: int, n_neg: int, delta: float, confidence: float) -> float:
    """ε lower bound from a test that fires ``tp`` times in ``n_pos`` trials of ``D`` and ``fp`` in ``n_neg`` of
    ``D'``: ``log((TPR_lo − δ) / FPR_hi)`` with both Clopper–Pearson bounds at ``confidence`` jointly (0 if
    negative)."""
    alpha = 1 - confidence
    tpr_lo, _ = clopper_pearson(tp, n_pos, alpha)
    _, fpr_hi = clopper_pearson(fp, n_neg, alpha)
    if tpr_lo <= delta or fpr_hi <= 0:
        return 0.0
    return max(0.0, math.log((tpr_lo - delta) / fpr_hi))


def flat_update(update: tuple[Tensor, ...]) -> Tensor:
    return torch.cat([u.detach().reshape(-1).cpu().double() for u in update])


def _grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    dev = params[0].device
    loss = F.cross_entropy(model(x[None].to(dev)), y[None].to(dev))
    return torch.cat([g.reshape(-1).cpu().double() for g in torch.autograd.grad(loss, params)])


def _orthonormal(vectors: list[Tensor]) -> tuple[Tensor, list[int]]:
    """Gram–Schmidt rows of the non-negligible ``vectors``, in order: ``(k, P)``, and which vector gave each."""
    basis: list[Tensor] = []
    sources: list[int] = []
    for i, v in enumerate(vectors):
        w = v.clone()
        for b in basis:
            w -= (w @ b) * b
        if float(w.norm()) > 1e-6 * max(1.0, float(v.norm())):
            basis.append(w / w.norm())
            sources.append(i)
    if not basis or sources[0] != 0:
        raise InputError("the canary has no gradient signal: choose a canary whose gradient differs between worlds")
    return torch.stack(basis), sources


def canary_directions(model: nn.Module, step: TrainingStep, data: StepData, canary: int) -> tuple[Tensor, Tensor]:
    """The auditor's own directions for canary ``canary`` at the model's weights: ``(basis (k, P) orthonormal,
    gates (k,))``. The directions: its gradient difference between ``D`` and its neighbour (the signal), its
    gradient in the neighbour, and its blanked view's. ``gates[j]`` (j >= 1): half the projection a term along
    direction j adds to the update when the canary is in the batch (the update is divided by the step's
    ``denominator``): above it, "the canary was sampled"."""
    changed = torch.zeros(len(data), dtype=torch.bool)
    changed[canary] = True
    other = step.neighbour(data, changed)
    y = data.labels[canary]
    g_in = _grad(model, data.images[canary], y)
    g_out = _grad(model, other.images[canary], y) if len(other) == len(data) else torch.zeros_like(g_in)
    vectors = [g_in - g_out, g_out]
    if data.public is not None:
        vectors.append(_grad(model, data.public[canary], y))
    basis, sources = _orthonormal(vectors)
    gates = torch.tensor([0.5 * float(vectors[i] @ b) / step.denominator for i, b in zip(sources, basis)],
                         dtype=torch.float64)
    return basis, gates


def update_features(step: TrainingStep, model: nn.Module, data: StepData, basis: Tensor, trials: int, seed: int,
              world: str, progress: Optional[Callable[[int], None]]) -> Tensor:
    out = torch.empty(trials, basis.shape[0], dtype=torch.float64)
    # one generator pair for all trials, as training passes one pair to all its steps: a step that reseeds or
    # rewinds its noise repeats it, and the repeated noise separates the worlds
    sampling = torch.Generator().manual_seed(derive_seed(seed, world, "sampling"))
    noise = torch.Generator().manual_seed(derive_seed(seed, world, "noise"))
    for t in range(trials):
        out[t] = basis @ flat_update(step(model, data, sampling, noise))
        if progress is not None:
            progress(1)
    return out
