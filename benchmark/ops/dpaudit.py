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

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from privbench.core.errors import InputError
from privbench.core.release import StepData, TrainingStep
from privbench.core.seeding import derive_seed
from privbench.ops.canaries import (
    AuditResult,
    canary_data,
    canary_directions,
    epsilon_from_rates,
    probe_model,
    update_features,
)
from privbench.ops.onerun import one_run_audit


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
    s_in = update_features(step, model, data, basis, trials, seed, "D", progress)
    s_out = update_features(step, model, neighbour, basis, trials, seed, "D'", progress)
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
