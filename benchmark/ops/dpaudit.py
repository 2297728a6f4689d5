"""Empirical DP audits: lower bounds on the ε a training step really has, beside the ε it claims (issue 24).

Both audits run a defense's :class:`~privbench.core.release.TrainingStep`, the object its training runs, in the
white-box threat model of the ``gradients`` surface: the adversary chooses the model and the data, and sees every
update, Poisson sampling and public terms included.

- **Step-level canary audit** (:func:`step_audit`; Jagielski, Ullman & Oprea 2020; Nasr et al. 2021/2023). One
  canary; ``D`` holds it, ``D'`` is its neighbour under the step's adjacency (removed, or its sensitive region
  blanked). Many independent steps in each world; each update is projected onto the canary's own directions (its
  gradient difference between the worlds, its gradient in ``D'``, its blanked view's gradient), which the auditor
  computes itself. A family of rejection regions (a threshold on the signal, optionally gated by another
  direction: "was the canary sampled?") is fitted on 30% of the trials and evaluated once on the rest; the
  Clopper–Pearson bounds on its two rates give ``ε̂ = log((TPR_lo − δ) / FPR_hi)`` at the stated confidence, to
  be compared with the claimed ε of one step at the same (σ, q, δ).
- **One-run audit** (:func:`one_run_audit`; Steinke, Nasr & Jagielski, NeurIPS 2023). ``m`` canaries, each in the
  training set with probability 1/2, one training run of ``steps`` steps; each canary is scored by the sum over
  steps of the update projected on its direction (gated like the step audit when it has a blanked view); the
  ``k+`` highest are guessed in and the ``k−`` lowest out (both fixed in advance), and ``W`` correct guesses give
  ε̂ by their Theorem (``P[W ≥ v] ≤ f(v) + 2mδ·max_i (f(v−i) − f(v))/i``, ``f`` the Binomial(r, e^ε/(1+e^ε))
  tail), against the claimed ε of the whole run.

ε̂ is a lower bound at its confidence: above the claim means the mechanism violates its claim (the record fails); far
below says only that this adversary could not show more. Positive controls (a same-batch MaskDP and a DP-SGD
without clipping) are in ``tests/dp_controls.py``; the audit must flag them and must not flag correct mechanisms.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Splits
from privbench.core.release import Release, StepData, TrainingStep
from privbench.core.seeding import derive_seed
from privbench.ops.persample import flat_per_sample_gradients


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


def _flat(update: tuple[Tensor, ...]) -> Tensor:
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


def _features(step: TrainingStep, model: nn.Module, data: StepData, basis: Tensor, trials: int, seed: int,
              world: str, progress: Optional[Callable[[int], None]]) -> Tensor:
    out = torch.empty(trials, basis.shape[0], dtype=torch.float64)
    # one generator pair for all trials, as training passes one pair to all its steps: a step that reseeds or
    # rewinds its noise repeats it, and the repeated noise separates the worlds
    sampling = torch.Generator().manual_seed(derive_seed(seed, world, "sampling"))
    noise = torch.Generator().manual_seed(derive_seed(seed, world, "noise"))
    for t in range(trials):
        out[t] = basis @ _flat(step(model, data, sampling, noise))
        if progress is not None:
            progress(1)
    return out


@dataclass(frozen=True)
class _Rule:
    """Fire when ``sign·s[0] > t`` and (if ``gate`` >= 0) ``s[gate] > tau``; ``sign`` +1 tests D against D',
    −1 the reverse."""

    sign: int
    t: float
    gate: int = -1
    tau: float = 0.0

    def fires(self, s: Tensor) -> Tensor:
        hit = self.sign * s[:, 0] > self.t
        if self.gate >= 0:
            hit &= s[:, self.gate] > self.tau
        return hit


#: Share of a step audit's trials that choose the rejection region; the others, never seen by the choice, bound ε.
FIT_FRACTION = 0.3

_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)


def _rules(fit_in: Tensor, fit_out: Tensor, gates: Tensor) -> list[_Rule]:
    """Candidate rejection regions: thresholds at quantiles of the signal, ungated or within each "was it
    sampled?" gate, the thresholds taken among the gated trials."""
    levels = torch.tensor(_LEVELS, dtype=torch.float64)
    both = torch.cat([fit_in, fit_out])
    rules = []
    for sign in (1, -1):
        for j in range(-1, both.shape[1]):
            if j == 0:
                continue
            inside = both if j < 0 else both[both[:, j] > float(gates[j])]
            if len(inside) < 10:
                continue
            tau = 0.0 if j < 0 else float(gates[j])
            rules += [_Rule(sign, t, j, tau) for t in torch.quantile(sign * inside[:, 0], levels).tolist()]
    return rules


def step_audit(step: TrainingStep, model: nn.Module, data: StepData, canary: int, claimed: float, delta: float,
               trials: int = 20_000, seed: int = 0, confidence: float = 0.95,
               progress: Optional[Callable[[int], None]] = None) -> AuditResult:
    """Step-level canary audit (module docstring): ``trials`` steps in each world, :data:`FIT_FRACTION` of them to
    choose the test, the rest to bound ε. ``claimed``: the ε the defense's accountant gives one step at the step's (σ, q) and ``delta``."""
    if trials < 200:
        raise InputError(f"a step audit needs at least 200 trials per world, got {trials}")
    start = time.perf_counter()
    model = model.eval()
    changed = torch.zeros(len(data), dtype=torch.bool)
    changed[canary] = True
    neighbour = step.neighbour(data, changed)
    basis, gates = canary_directions(model, step, data, canary)
    s_in = _features(step, model, data, basis, trials, seed, "D", progress)
    s_out = _features(step, model, neighbour, basis, trials, seed, "D'", progress)
    half = int(trials * FIT_FRACTION)  # the trials that choose the test; the rest bound ε
    best, best_fit = None, -1.0
    for rule in _rules(s_in[:half], s_out[:half], gates):
        pos, neg = (s_in, s_out) if rule.sign > 0 else (s_out, s_in)  # the world the region should favour
        # two pseudo false positives: a lucky region with none on the fit half does not win (it rarely holds up)
        fit = epsilon_from_rates(int(rule.fires(pos[:half]).sum()), half, int(rule.fires(neg[:half]).sum()) + 2,
                                 half, delta, confidence)
        if fit > best_fit:
            best, best_fit = rule, fit
    assert best is not None
    pos, neg = (s_in, s_out) if best.sign > 0 else (s_out, s_in)
    n = trials - half
    tp, fp = int(best.fires(pos[half:]).sum()), int(best.fires(neg[half:]).sum())
    eps = epsilon_from_rates(tp, n, fp, n, delta, confidence)
    return AuditResult("step", eps, claimed, delta, confidence, trials, time.perf_counter() - start,
                       {"true_positives": float(tp), "false_positives": float(fp), "evaluation_trials": float(n),
                        "gated": float(best.gate >= 0), "directions": float(basis.shape[0])})


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Steinke, Nasr & Jagielski 2023: an upper bound on ``P[W ≥ v]`` for ``r`` guesses about ``m`` canaries of an
    (ε, δ)-DP run (their Theorem; Appendix D's computation)."""
    from scipy.stats import binom

    p = 1 / (1 + math.exp(-eps))
    tail = float(binom.sf(v - 1, r, p))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    alpha, mass = 0.0, 0.0
    for i in range(1, v + 1):
        mass += float(binom.pmf(v - i, r, p))  # f(v − i) − f(v)
        alpha = max(alpha, mass / i)
    return min(tail + 2 * m * delta * alpha, 1.0)


def one_run_epsilon(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    """The largest ε whose p-value for ``v`` correct of ``r`` guesses stays below ``1 − confidence`` (0 if none)."""
    beta = 1 - confidence
    if not 0 <= v <= r <= m:
        raise InputError(f"one-run audit needs 0 <= correct <= guesses <= canaries, got {v}, {r}, {m}")
    if one_run_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, hi * 2
        if hi > 1e3:
            return lo
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if one_run_p_value(m, r, v, mid, delta) < beta else (lo, mid)
    return lo


def one_run_audit(step: TrainingStep, model: nn.Module, canaries: StepData, claimed: float, delta: float,
                  steps: int, lr: float, guesses: tuple[int, int], seed: int = 0, confidence: float = 0.95,
                  progress: Optional[Callable[[int], None]] = None) -> AuditResult:
    """One-run audit (module docstring): each of ``canaries`` is in the run with probability 1/2 (else its
    neighbour under the step's adjacency), ``steps`` SGD steps of learning rate ``lr`` on ``model``, each canary
    scored on every update; ``guesses = (k+, k−)``, fixed in advance. ``claimed``: the run's ε at ``delta``."""
    m = len(canaries)
    k_pos, k_neg = guesses
    if k_pos < 0 or k_neg < 0 or k_pos + k_neg > m or k_pos + k_neg == 0:
        raise InputError(f"guesses (k+, k-) = {guesses} must be >= 0, not both 0, and at most {m} together")
    start = time.perf_counter()
    g = torch.Generator().manual_seed(derive_seed(seed, "one-run", "membership"))
    included = torch.rand(m, generator=g) < 0.5
    data = step.neighbour(canaries, ~included)
    everyone_out = step.neighbour(canaries, torch.ones(m, dtype=torch.bool))
    trainable = [p for p in model.parameters() if p.requires_grad]
    gated = canaries.public is not None  # then two scores: ungated and gated on "was i's public term shown?"
    scores = torch.zeros((2 if gated else 1, m), dtype=torch.float64)
    sampling = torch.Generator().manual_seed(derive_seed(seed, "one-run", "sampling"))  # one pair, as in training
    noise = torch.Generator().manual_seed(derive_seed(seed, "one-run", "noise"))
    for t in range(steps):
        g_in = flat_per_sample_gradients(model, canaries.images, canaries.labels)
        g_out = (flat_per_sample_gradients(model, everyone_out.images, everyone_out.labels) if len(everyone_out) == m
                 else torch.zeros_like(g_in))
        d = g_in - g_out
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        update = step(model, data, sampling, noise)
        u = _flat(update)
        contribution = d @ u
        scores[0] += contribution
        if gated:
            a = flat_per_sample_gradients(model, canaries.public, canaries.labels)
            norm = a.norm(dim=1)
            seen = (a @ u) / norm.clamp_min(1e-12) > 0.5 * norm / step.denominator
            scores[1] += torch.where(seen, contribution, torch.zeros_like(contribution))
        with torch.no_grad():
            for prm, gu in zip(trainable, update):
                prm -= lr * gu.to(prm.device)
        if progress is not None:
            progress(1)
    # Two scores are two tests: each at half the error rate (Bonferroni), the better one reported.
    level = 1 - (1 - confidence) / len(scores)
    r = k_pos + k_neg
    best = (-1.0, 0, 0)
    for i, row in enumerate(scores):
        order = torch.argsort(row, descending=True)
        guessed_in, guessed_out = order[:k_pos], order[m - k_neg:] if k_neg else order[:0]
        correct = int(included[guessed_in].sum()) + int((~included[guessed_out]).sum())
        eps_i = one_run_epsilon(m, r, correct, delta, level)
        if eps_i > best[0]:
            best = (eps_i, correct, i)
    eps, correct, which = best
    ceiling = one_run_epsilon(m, r, r, delta, level)  # every guess right: no claim at or above it can be refuted
    return AuditResult("one-run", eps, claimed, delta, confidence, steps, time.perf_counter() - start,
                       {"canaries": float(m), "guesses": float(r), "correct": float(correct),
                        "included": float(int(included.sum())), "gated": float(which), "ceiling": ceiling,
                        "vacuous": float(claimed >= ceiling)})


#: The auditor's canary shape per modality: a small clip or image (the probe is the auditor's choice, the step is
#: the defense's); the leading dimension (frames or channels) follows the dataset's.
def _canary_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (2, shape[-3], 8, 8) if len(shape) == 4 else (shape[-3], 8, 8)


@dataclass(frozen=True)
class AuditPlan:
    """What ``privbench dp-audit`` runs per DP configuration (frozen from the CLI)."""

    trials: int = 20_000
    canaries: int = 1000
    guesses: tuple[int, int] = (100, 100)
    confidence: float = 0.95
    seed: int = 0


def audit_defense(defense, n: int, shape: tuple[int, ...], identities: Optional[Tensor], task, plan: AuditPlan,
                  progress: Optional[Callable[[int], None]] = None) -> dict[str, object]:
    """Both audits of one DP defense configuration as the suite trains it (``n`` private samples of ``shape``):
    its own :class:`~privbench.core.release.TrainingStep` at its (σ, q), against its claimed ε per step and per run.
    ``defense`` must offer ``plan(n, identities, task)`` and ``training_step(plan, n)`` (DP-SGD-style defenses)."""
    if not (hasattr(defense, "plan") and hasattr(defense, "training_step")):
        raise InputError(f"{type(defense).__name__} exposes no DP training step to audit")
    dp = defense.plan(n, identities, task)
    if dp.noise_multiplier <= 0:
        raise InputError(f"{type(defense).__name__} at σ = 0 claims no ε: nothing to audit")
    delta = defense.params.delta
    from privbench.ops.accounting import poisson_gaussian

    step_claim = poisson_gaussian(dp.noise_multiplier, dp.sample_rate, 1, delta).epsilon
    run_claim = poisson_gaussian(dp.noise_multiplier, dp.sample_rate, dp.steps, delta).epsilon
    cshape = _canary_shape(shape)
    classes = 5
    fill = getattr(defense, "blank_fill", None)  # the constant a blanked view uses (MaskDP), else no blanked view
    one = canary_data(cshape, 1, classes, torch.Generator().manual_seed(derive_seed(plan.seed, "canary")), fill=fill)
    # A configuration is flagged if either audit fires: each runs at half the error rate, so a correct mechanism
    # is flagged with probability at most 1 − confidence per configuration.
    level = 1 - (1 - plan.confidence) / 2
    step = step_audit(defense.training_step(dp, 1), probe_model(cshape, classes), one, 0, step_claim, delta,
                      trials=plan.trials, seed=plan.seed, confidence=level, progress=progress)
    many = canary_data(cshape, plan.canaries, classes,
                       torch.Generator().manual_seed(derive_seed(plan.seed, "canaries")), fill=fill)
    run = one_run_audit(defense.training_step(dp, plan.canaries), probe_model(cshape, classes), many, run_claim,
                        delta, steps=dp.steps, lr=0.0, guesses=plan.guesses, seed=plan.seed,
                        confidence=level, progress=progress)
    return {"noise_multiplier": dp.noise_multiplier, "sample_rate": dp.sample_rate, "steps": dp.steps,
            "delta": delta, "step": step.as_dict(), "one_run": run.as_dict(),
            "violated": step.violated or run.violated}


def _released_parts(release: Release, n_private: int) -> tuple[Optional[Tensor], list[Tensor]]:
    """``(aligned, others)``: the released data as ``(N, D)`` rows aligned with the private split when it is, and
    every released image set as ``(n, D)`` rows (data and synthetic; empty sets dropped)."""
    parts = [p.images for p in (release.data, release.synthetic) if p is not None and len(p.images)]
    if not parts:
        raise InputError("the black-box DP audit scores canaries on released images (data or synthetic); this "
                         "release has neither")
    aligned = None
    if release.data is not None and len(release.data.images) == n_private:
        aligned = release.data.images.reshape(n_private, -1).double()
    return aligned, [p.reshape(len(p), -1).double() for p in parts]


def _ridge_decoder(release_rows: Tensor, originals: Tensor, lam: float = 1e-3) -> Callable[[Tensor], Tensor]:
    """A linear map release -> image fitted on rows the auditor knows (kernel form, ``n`` rows of ``D`` values):
    it undoes any linear re-encoding (a shift, a negative, a fixed pixel permutation, a colour map)."""
    x = torch.cat([release_rows, torch.ones(len(release_rows), 1, dtype=release_rows.dtype)], 1)
    gram = x @ x.T
    alpha = torch.linalg.solve(gram + lam * float(gram.diagonal().mean()) * torch.eye(len(x), dtype=x.dtype),
                               originals)

    def decode(rows: Tensor) -> Tensor:
        z = torch.cat([rows, torch.ones(len(rows), 1, dtype=rows.dtype)], 1)
        return (z @ x.T) @ alpha

    return decode


def _same_label_canaries(private: ImageSet, test: ImageSet, slots: Tensor, generator: torch.Generator
                         ) -> tuple[Tensor, Tensor]:
    """For each slot, a distinct test sample with the slot's own label: ``(kept slots, their canaries' test
    indices)`` (slots whose label the test split has run out of are dropped)."""
    order = torch.randperm(len(test), generator=generator)
    pools: dict[int, list[int]] = {}
    for i in order.tolist():
        pools.setdefault(int(test.labels[i]), []).append(i)
    kept, picks = [], []
    for slot in slots.tolist():
        pool = pools.get(int(private.labels[slot]))
        if pool:
            kept.append(slot)
            picks.append(pool.pop())
    return torch.tensor(kept, dtype=torch.long), torch.tensor(picks, dtype=torch.long)


def one_run_blackbox(build: Callable[[Splits], Release], splits: Splits, claimed: float, delta: float,
                     seed: int, canaries: int = 500, confidence: float = 0.95) -> AuditResult:
    """Black-box one-run audit of a whole build (a submitted defense's self-reported ε; Steinke, Nasr & Jagielski
    2023, their black-box setting).

    Canaries are up to ``canaries`` samples of the *test* split (a build never sees it), each with the label of its
    own secret private slot (so a release that shows labels, which aligned data must, is tested for its images:
    labels are treated as public). With probability 1/2 a canary is written over its slot, else the slot keeps its
    sample. One ``build`` on those splits (same size, canaries at secret positions; ``seed`` must be secret, e.g.
    keyed by the run key). Two scores, each a test at half the error rate: minus the distance from a canary to the
    nearest released image (data and synthetic), and, when the data is aligned with the private split, minus the
    distance between the canary and its slot's release decoded by a ridge map fitted on the slots without canaries
    (a shift, negative or pixel permutation is undone). A tenth of the canaries are guessed in and a tenth out,
    fixed in advance.

    Writing a canary over a slot is *replace-one* adjacency: an (ε, δ) claim for one sample added or removed gives
    (2ε, (1 + e^ε)δ) for one replaced (group privacy), which is what is tested (``details['claim_replace']``).
    Not refuted is not verified: a release keyed by its own content can hide from any black-box score."""
    start = time.perf_counter()
    n = len(splits.private)
    g = torch.Generator().manual_seed(derive_seed(seed, "blackbox", "canaries"))
    slots, picks = _same_label_canaries(splits.private, splits.test,
                                        torch.randperm(n, generator=g)[:min(canaries, len(splits.test), n // 2)], g)
    m = len(slots)
    guesses = m // 10
    if guesses < 5:
        raise InputError(f"the black-box audit needs at least 50 canaries (test samples with the private labels, at "
                         f"most half the private split), has {m}")
    pool = splits.test.subset(picks)
    included = torch.rand(m, generator=g) < 0.5
    private = splits.private
    chosen = slots[included]
    fields = {}
    for name in ("images", "labels", "identities", "masks", "keypoints"):
        a, b = getattr(private, name), getattr(pool, name)
        if a is None or b is None:
            fields[name] = None
            continue
        a = a.clone()
        a[chosen] = b[included]
        fields[name] = a
    audited = Splits(ImageSet(**fields), splits.aux, splits.test, splits.targets, splits.info)
    release = build(audited)
    aligned, parts = _released_parts(release, n)
    x = pool.images.reshape(m, -1).double()
    if any(p.shape[1] != x.shape[1] for p in (parts if aligned is None else parts[1:])):  # fail closed
        raise InputError(f"a released image set has {[p.shape[1] for p in parts]} values per image, the inputs "
                         f"{x.shape[1]}: the black-box audit compares released images with the canaries and "
                         "cannot compare this one")
    scores: list[Tensor] = []
    comparable = [p for p in parts if p.shape[1] == x.shape[1]]
    if comparable:
        nearest = torch.stack([torch.cat([torch.cdist(x[i:i + 256], p).min(1).values for i in range(0, m, 256)])
                               for p in comparable]).min(0).values
        scores.append(-nearest)
    if aligned is not None:
        known = torch.ones(n, dtype=torch.bool)
        known[slots] = False
        decode = _ridge_decoder(aligned[known], private.images.reshape(n, -1).double()[known])
        scores.append(-(decode(aligned[slots]) - x).norm(dim=1))
    if not scores:
        raise InputError("the black-box audit found no released images it can compare with the canaries")
    level = 1 - (1 - confidence) / len(scores)
    claim_r = 2 * claimed
    delta_r = min(1.0, (1 + math.exp(min(claimed, 700.0))) * delta)
    best = (-1.0, 0, 0)
    for i, score in enumerate(scores):
        order = torch.argsort(score, descending=True)
        correct = int(included[order[:guesses]].sum()) + int((~included[order[m - guesses:]]).sum())
        eps_i = one_run_epsilon(m, 2 * guesses, correct, delta_r, level) if delta_r < 1 else 0.0
        if eps_i > best[0]:
            best = (eps_i, correct, i)
    eps, correct, which = best
    ceiling = one_run_epsilon(m, 2 * guesses, 2 * guesses, delta_r, level) if delta_r < 1 else 0.0
    return AuditResult("one-run black-box", eps, claim_r, delta_r, confidence, 1, time.perf_counter() - start,
                       {"canaries": float(m), "guesses": float(2 * guesses), "correct": float(correct),
                        "included": float(int(included.sum())), "ceiling": ceiling,
                        "vacuous": float(claim_r >= ceiling), "claim_add_remove": claimed,
                        "claim_replace": claim_r, "score": float(which), "scores": float(len(scores))})
