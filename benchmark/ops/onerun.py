"""The one-run DP audit (Steinke, Nasr & Jagielski, NeurIPS 2023; :mod:`privbench.ops.dpaudit` for the overview):
``m`` canaries, each in the training set with probability 1/2, one training run; ``W`` correct guesses among ``r``
give ε̂ by their Theorem. Also its black-box form on a whole defense (:func:`one_run_blackbox`): canaries planted in
the private split, scored by how well the release reproduces them."""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Splits
from privbench.core.release import Release, StepData, TrainingStep
from privbench.core.seeding import derive_seed
from privbench.ops.canaries import AuditResult, flat_update
from privbench.ops.persample import flat_per_sample_gradients


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
        u = flat_update(update)
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
    release = build(_planted(splits, slots[included], pool, included))
    scores = _blackbox_scores(release, splits.private, slots, pool)
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


def _planted(splits: Splits, chosen: Tensor, pool: ImageSet, included: Tensor) -> Splits:
    """``splits`` with the included canaries of ``pool`` written over their private slots ``chosen`` (every field
    both sets hold; the other splits unchanged)."""
    fields = {}
    for name in ("images", "labels", "identities", "masks", "keypoints"):
        a, b = getattr(splits.private, name), getattr(pool, name)
        if a is None or b is None:
            fields[name] = None
            continue
        a = a.clone()
        a[chosen] = b[included]
        fields[name] = a
    return Splits(ImageSet(**fields), splits.aux, splits.test, splits.targets, splits.info)


def _blackbox_scores(release: Release, private: ImageSet, slots: Tensor, pool: ImageSet) -> list[Tensor]:
    """The membership scores of the ``len(slots)`` canaries ``pool`` (higher: more likely included): minus the
    distance to the nearest released image, and (aligned releases) minus the distance to their slot's release
    decoded by a ridge map fitted on the other slots. Fails closed on a release it cannot compare."""
    n, m = len(private), len(slots)
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
    return scores
