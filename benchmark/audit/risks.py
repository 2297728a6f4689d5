"""The audit's risks, each a statistic on the release next to the same statistic with a baseline set in its place
(docs/AUDIT.md). Every risk reports its estimate, its baseline, a calibrated value with a 95% bootstrap CI over
images, and per-file rows for ``flagged.csv``.

- **near-copy**: share of release images closer to some original than all but ``alpha`` of fresh images are, by
  one conformal test on the edit-invariant copy distance of :mod:`.copies` (canonical images compared over
  translations, zooms, half-pixel moves, a blur and mirroring): the distance to the closest original over the
  distance to the closest *other* original (``nndr``; small when one original stands out: a copy, even among
  look-alikes). One test, not a Bonferroni pair with the plain distance: on photo tiles with leave-one-out the pair
  flagged 0.69 of edited copies and ``nndr`` alone 0.89, at false-flag rates of 0.000 and 0.003 (docs/AUDIT.md).
  Its blind spot: a copy of an original that has a near-duplicate among the originals. Flat images (no structure,
  :data:`.copies.FLAT`) are never flagged and counted. Baseline: that share among fresh images (``--aux``, else
  each original against the others, leave-one-out). Calibrated: ``(p - p0) / (1 - p0)``, 0 for a release
  unrelated to the originals, 1 when every image is a copy. A baseline too small for the rate says so ("could not
  test at this rate") instead of a number.
- **linkage** (aligned releases, where release and original files share a relative name): rank-1 accuracy of
  matching each release image to its original among all originals by nearest neighbour, the feature space chosen by
  cross-fitting (chosen on one half of the pairs, scored on the other) so the choice adds no bias. Baseline:
  chance, ``1 / N``. Calibrated ``(acc - 1/N) / (1 - 1/N)``.
- **faces** / **people**: a presence count, not calibrated: the share of release images where OpenCV's frontal-face
  Haar cascade / HOG people detector fires (0 = no detection), shown next to the same share on the reference images
  (``--aux``, else the originals). It says whether people are still visible, not whose; a release of unrelated
  photos of people scores high on it and ≈ 0 on the identity risks above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from privbench.audit.features import SPACES, nearest
from privbench.audit.loader import Folder

BOOTSTRAP = 1000


@dataclass(frozen=True)
class Row:
    """One line of ``flagged.csv``."""

    release: str
    original: str
    risk: str
    score: float
    threshold: float
    flagged: bool


@dataclass
class Risk:
    """One risk's result. ``value``: the calibrated number (``None`` when not applicable, with ``reason``)."""

    name: str
    estimate: Optional[float]
    baseline: Optional[float]
    value: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    n: int
    meaning: str
    reason: str = ""
    calibrated: bool = True  # False: a presence count (its value is the raw share; 0 = nothing detected)
    detail: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (release, original, score): top flags

    def summary(self) -> dict[str, Any]:
        """Plain values (the report makes non-finite ones ``None``)."""
        return {"estimate": self.estimate, "baseline": self.baseline, "value": self.value,
                "kind": "calibrated" if self.calibrated else "presence",
                "ci95": None if self.lo is None else [self.lo, self.hi], "n": self.n,
                "meaning": self.meaning,
                "applicable": self.value is not None, "reason": self.reason, "detail": self.detail}


def _percentile_ci(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return -np.inf, np.inf
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


def _conformal(base_sorted: np.ndarray, values: np.ndarray, a: float) -> np.ndarray:
    """Flags of ``values`` by their conformal p-value against the baseline, ``(1 + #{b <= v}) / (m + 1) <= a``:
    a fresh image exchangeable with the baseline is flagged with probability at most ``a``, ties included."""
    m = len(base_sorted)
    return (1 + np.searchsorted(base_sorted, values, side="right")) / (m + 1) <= a


def _self_flags(base_sorted: np.ndarray, a: float) -> np.ndarray:
    """The same rule for each baseline value against the others (leave-one-out): ``#{b <= v} / m <= a``."""
    m = len(base_sorted)
    return np.searchsorted(base_sorted, base_sorted, side="right") / m <= a


#: The near-copy test on the copy distance of :mod:`.copies`: ``nndr``, the distance to the closest original over the
#: distance to the closest other original.
NEAR_COPY_TESTS = ("copy-nndr",)

#: Why a near-copy value is missing when the baseline cannot resolve the rate (the report shows it as such).
CANNOT_TEST = "could not test at this rate"


def _nndr(d: np.ndarray) -> np.ndarray:
    """Closest / second-closest distance; 1 (no distinct nearest original) when the second is 0 too, ``inf`` for a
    flat image (closest distance ``inf``)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # inf / inf for flat images, handled below
        ratio = np.where(d[:, 1] > 0, d[:, 0] / np.where(d[:, 1] > 0, d[:, 1], 1.0), 1.0)
    return np.where(np.isfinite(d[:, 0]), np.nan_to_num(ratio, nan=1.0, posinf=1.0), np.inf)


def near_copy(release: Folder, originals: Folder, reference: Optional[Folder], alpha: float,
              generator: np.random.Generator) -> Risk:
    """See the module docstring. Each of the :data:`NEAR_COPY_TESTS` flags at ``alpha / len(tests)`` of the
    baseline (Bonferroni)."""
    from privbench.audit.copies import canonical, copy_distances

    tests = list(NEAR_COPY_TESTS)
    per = alpha / len(tests)
    c_orig, c_rel = canonical(originals.images), canonical(release.images)
    d, i = copy_distances(c_rel, c_orig)
    if reference is None:
        b = copy_distances(c_orig, c_orig, exclude_self=True)[0]
        flat_base = c_orig.flat
    else:
        c_ref = canonical(reference.images)
        b = copy_distances(c_ref, c_orig)[0]
        flat_base = c_ref.flat
    rel = {"copy-dcr": d[:, 0], "copy-nndr": _nndr(d)}
    # a flat baseline image has no statistic (it could never be flagged): it is left out of the baseline, so that
    # padding an aux folder with flat tiles neither lowers the thresholds nor counts towards the rates it resolves
    base = {"copy-dcr": b[~flat_base, 0], "copy-nndr": _nndr(b[~flat_base])}
    closest = {k: i[:, 0] for k in tests}

    n, m = len(release), len(base[tests[0]])
    meaning = ("share of release images flagged as near-copies beyond the false-flag rate of fresh images, "
               "(p - p0) / (1 - p0)")
    if per * (m + 1) < 1:
        return _untestable(n, m, len(tests), alpha, int(flat_base.sum()), meaning)

    def rates(rel_idx: np.ndarray, base_idx: np.ndarray) -> tuple[float, float]:
        flag_rel = np.zeros(len(rel_idx), bool)
        flag_base = np.zeros(len(base_idx), bool)
        for k in tests:
            b = np.sort(base[k][base_idx])
            flag_rel |= _conformal(b, rel[k][rel_idx], per)
            flag_base |= _self_flags(b, per)
        return float(flag_rel.mean()), float(flag_base.mean())

    p, p0 = rates(np.arange(n), np.arange(m))
    value = (p - p0) / (1 - p0)
    boot = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        bp, bp0 = rates(generator.integers(0, n, n), generator.integers(0, m, m))
        boot[b] = (bp - bp0) / (1 - bp0)
    lo, hi = _percentile_ci(boot)
    # the same rule as a threshold per test: flagged iff statistic < t (strictly), t the K-th smallest baseline value
    t = {k: float(np.sort(base[k])[int(np.floor(per * (m + 1))) - 1]) for k in tests}
    flags = {k: _conformal(np.sort(base[k]), rel[k], per) for k in tests}
    rows, pairs = _flag_rows(release, originals, rel, t, flags, closest)
    weak = int((~c_orig.structured & ~c_orig.flat).sum())
    flat = int(c_orig.flat.sum())
    limits = _structure_limits(weak, flat, len(c_orig.rms))
    return Risk("near-copy", p, p0, float(value), lo, hi, n, meaning, reason=limits,
                detail={"false_flag_rate": alpha, "per_test_rate": per, "thresholds": t,
                        "baseline": "aux images" if reference is not None else "originals, leave-one-out",
                        "baseline_images": m, "flagged_by_test": {k: int(flags[k].sum()) for k in tests},
                        "flagged": int(round(p * n)), "flat_release": int(c_rel.flat.sum()),
                        "flat_baseline": int(flat_base.sum()), "weak_originals": weak, "flat_originals": flat,
                        "status": "copies found" if round(p * n) else "no copy found"},
                rows=rows, pairs=sorted(pairs, key=lambda x: x[2])[:24])



def _untestable(n: int, m: int, tests: int, alpha: float, flat: int, meaning: str) -> Risk:
    """The near-copy risk when ``m`` baseline images cannot resolve ``alpha`` over ``tests`` tests."""
    need = int(np.ceil(1 / (alpha / tests))) - 1
    lowest = tests / (m + 1)
    left_out = f" ({flat} flat baseline images left out)" if flat else ""
    return Risk("near-copy", None, None, None, None, None, n, meaning,
                reason=f"{CANNOT_TEST}: {m} baseline images{left_out} resolve a false-flag rate of {lowest:.3g} or "
                       f"more over {tests} tests, not {alpha:g}: give at least {need} (--aux, or more originals) "
                       "or raise --false-flag-rate",
                detail={"status": CANNOT_TEST, "baseline_images": m, "flat_baseline": flat, "lowest_rate": lowest})


def _flag_rows(release: Folder, originals: Folder, rel: dict[str, np.ndarray], t: dict[str, float],
               flags: dict[str, np.ndarray], closest: dict[str, np.ndarray]) -> tuple[list[Row], list]:
    """One row per release image (its strongest test: statistic / threshold, its closest original) and the
    ``(release, original, score)`` pairs of the flagged ones."""
    tests = list(t)  # the tests in use (NEAR_COPY_TESTS), a subset of the statistics in rel
    rows, pairs = [], []
    for r in range(len(release)):
        ratios = {k: rel[k][r] / t[k] if 0 < t[k] < np.inf else (0.0 if flags[k][r] else np.inf) for k in tests}
        best = min(tests, key=lambda k: (not flags[k][r], ratios[k]))
        flagged = any(flags[k][r] for k in tests)
        score = float(ratios[best])
        j = int(closest[best][r])
        rows.append(Row(release.names[r], originals.names[j] if j >= 0 else "", "near-copy", score, 1.0, flagged))
        if flagged:
            pairs.append((r, j, score))
    return rows, pairs


def _structure_limits(weak: int, flat: int, total: int) -> str:
    """What the originals' structure leaves untested (the report's reason line; empty when nothing)."""
    from privbench.audit.copies import FLAT, STRUCTURED

    return "; ".join(x for x in (
        f"{weak} of {total} originals have weak structure (RMS contrast {FLAT:g}-{STRUCTURED:g} grey "
        "levels): their edited copies are tested but often missed (docs/AUDIT.md, sweep)" if weak else "",
        f"{flat} originals are flat (RMS contrast under {FLAT:g}) and their copies cannot be told from "
        "look-alikes" if flat else "") if x)


def aligned_pairs(release: Folder, originals: Folder) -> list[tuple[int, int]]:
    """Release and original images that share a relative name without extension (``a/b.png`` ~ ``a/b.jpg``)."""
    def key(name: str) -> str:
        stem, _, frame = name.partition("#")
        return stem.rsplit(".", 1)[0] + ("#" + frame if frame else "")

    index = {key(n): i for i, n in enumerate(originals.names)}
    return [(r, index[key(n)]) for r, n in enumerate(release.names) if key(n) in index]


#: Fewest aligned (same-name) release/original pairs the linkage risk needs.
LINKAGE_MIN_PAIRS = 10


def linkage(release: Folder, originals: Folder, features: dict[str, dict[str, np.ndarray]],
            generator: np.random.Generator, min_pairs: int = LINKAGE_MIN_PAIRS) -> Risk:
    """See the module docstring."""
    pairs = aligned_pairs(release, originals)
    meaning = "rank-1 accuracy of linking release images to their originals above chance, (acc - 1/N) / (1 - 1/N)"
    if len(pairs) < min_pairs:
        return Risk("linkage", None, None, None, None, None, len(pairs), meaning,
                    reason=f"{len(pairs)} release files share a name with an original (needs {min_pairs}); "
                           "linkage needs an aligned release")
    rel = np.array([r for r, _ in pairs])
    truth = np.array([o for _, o in pairs])
    hits, found = {}, {}
    for s in ("pixels", "phash", "colour"):
        _, idx = nearest(features["originals"][s], features["release"][s][rel], 1, SPACES[s].binary)
        hits[s], found[s] = (idx[:, 0] == truth).astype(float), idx[:, 0]
    names = sorted(hits)
    h = np.stack([hits[s] for s in names])  # (spaces, pairs)
    chance = 1.0 / len(originals)

    def crossfit(a: np.ndarray, b: np.ndarray) -> tuple[float, list[str]]:
        sa, sb = int(h[:, b].mean(1).argmax()), int(h[:, a].mean(1).argmax())  # chosen on the other half
        return float(np.concatenate([h[sa, a], h[sb, b]]).mean()), [names[sa], names[sb]]

    order = generator.permutation(len(pairs))
    first, second = order[: len(order) // 2], order[len(order) // 2:]
    acc, chosen = crossfit(first, second)
    boot = np.array([crossfit(generator.choice(first, len(first)), generator.choice(second, len(second)))[0]
                     for _ in range(BOOTSTRAP)])  # halves resampled separately: no pair in both
    value = (acc - chance) / (1 - chance)
    lo, hi = _percentile_ci((boot - chance) / (1 - chance))
    best = max(names, key=lambda s: hits[s].mean())
    rows = [Row(release.names[r], originals.names[int(found[best][k])], "linkage", float(hits[best][k]), 1.0,
                bool(hits[best][k])) for k, r in enumerate(rel)]
    pairs_out = [(int(r), int(truth[k]), 0.0) for k, r in enumerate(rel) if hits[best][k]][:24]
    return Risk("linkage", acc, chance, float(value), lo, hi, len(pairs), meaning,
                detail={"pairs": len(pairs), "originals": len(originals), "spaces_chosen": chosen,
                        "accuracy_by_space": {s: float(hits[s].mean()) for s in names}},
                rows=rows, pairs=pairs_out)


def detections(release: Folder, reference: Folder, kind: str, generator: np.random.Generator,
               max_images: int, min_height: int = 256) -> Risk:
    """``kind``: ``faces`` (frontal-face Haar cascade) or ``people`` (HOG), on whole images (re-read, long side at
    most 512 pixels; not the normalised centre square), upscaled to ``min_height`` for the detectors' windows; at
    most ``max_images`` of each set are examined (a seeded sample)."""
    from privbench.audit.loader import detection_view
    from privbench.metrics.people import Cascade, HogPeople

    detector = Cascade("face", min_height=min_height) if kind == "faces" else HogPeople(min_height=min_height)

    def counts(folder: Folder) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(len(folder))
        if len(idx) > max_images:
            idx = np.sort(generator.choice(idx, max_images, replace=False))
        return idx, np.array([len(detector.boxes(detection_view(folder, int(i)))) for i in idx])

    ri, rc = counts(release)
    _, bc = counts(reference)
    p, p0 = float((rc > 0).mean()), float((bc > 0).mean())
    meaning = (f"share of release images with a {'face' if kind == 'faces' else 'person'} detection (a presence "
               "count, not calibrated: 0 = no detection; the baseline column is the reference images' share)")
    rows = [Row(release.names[i], "", kind, float(c), 1.0, bool(c > 0)) for i, c in zip(ri, rc)]
    pairs = [(int(i), -1, float(c)) for i, c in zip(ri, rc) if c > 0][:24]
    detail = {"examined_release": len(ri), "examined_reference": len(bc), "detections": int(rc.sum()),
              "detector": "OpenCV Haar frontal face" if kind == "faces" else "OpenCV HOG people"}
    boot = np.array([(rc[generator.integers(0, len(rc), len(rc))] > 0).mean() for _ in range(BOOTSTRAP)])
    lo, hi = _percentile_ci(boot)
    return Risk(kind, p, p0, p, lo, hi, len(ri), meaning, calibrated=False, detail=detail, rows=rows, pairs=pairs)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``labels`` (members True), ties counted half (Mann-Whitney)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    pos = labels.sum()
    neg = len(labels) - pos
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def membership(scores: dict[str, np.ndarray], is_member: np.ndarray, generator: np.random.Generator,
               names: list[str]) -> Risk:
    """Membership inference against a released model: per candidate image, each score (higher = more likely a
    member); the score is chosen by cross-fitting (on one half of the candidates, AUC measured on the other) and the
    AUC is calibrated against 0.5: ``2 · (AUC - 0.5)``."""
    methods = sorted(scores)
    n = len(is_member)
    # halves stratified by membership; each half picks the score the other half is measured with
    halves: list[list[int]] = [[], []]
    for label in (True, False):
        idx = generator.permutation(np.flatnonzero(is_member == label))
        halves[0] += idx[: len(idx) // 2].tolist()
        halves[1] += idx[len(idx) // 2:].tolist()
    first, second = np.array(halves[0]), np.array(halves[1])

    def crossfit(a: np.ndarray, b: np.ndarray) -> tuple[float, list[str]]:
        aucs, chosen = [], []
        for fit, test in ((a, b), (b, a)):
            if is_member[fit].all() or not is_member[fit].any() or is_member[test].all() or not is_member[test].any():
                return float("nan"), []
            best = max(methods, key=lambda m: _auc(scores[m][fit], is_member[fit]))
            aucs.append(_auc(scores[best][test], is_member[test]))
            chosen.append(best)
        return float(np.mean(aucs)), chosen

    def resample(half: np.ndarray) -> np.ndarray:  # within each class, so both stay present
        parts = [generator.choice(half[is_member[half] == c], int((is_member[half] == c).sum()))
                 for c in (True, False) if (is_member[half] == c).any()]
        return np.concatenate(parts)

    auc, chosen = crossfit(first, second)
    boot = np.array([crossfit(resample(first), resample(second))[0] for _ in range(BOOTSTRAP)])
    lo, hi = _percentile_ci(2 * (boot - 0.5))
    best = max(methods, key=lambda m: _auc(scores[m], is_member))
    if not np.isfinite(auc):
        return Risk("membership", None, 0.5, None, None, None, n, "AUC of telling members from non-members",
                    reason="each half needs members and non-members: give more labelled originals and aux images")
    return Risk("membership", auc, 0.5, 2 * (auc - 0.5), lo, hi, n,
                "AUC of telling the originals (members) from the aux images (non-members) by the model's outputs, "
                "2 · (AUC - 0.5)", detail={"members": int(is_member.sum()), "non_members": int((~is_member).sum()),
                                           "scores_chosen": chosen,
                                           "auc_by_score": {m: _auc(scores[m], is_member) for m in methods},
                                           "best_score": best})
