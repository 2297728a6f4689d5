"""Red-team (second pass) of the near-copy audit against issue 26's bar (docs/AUDIT.md, near-copy): copies under
JPEG q70, shift <= 2 px, brightness ±12%, crop <= 5% flagged with recall >= 0.95 at <= 1% false flags, with and
without ``--aux``; small baselines never show a pass.

- A failure within the claim is a plain test (it fails until the audit is fixed).
- Limitations outside the claim that are not fixed are ``xfail(strict=True)`` with the measured numbers.
- Attacks that held assert the behaviour.

300 originals, 300 aux and 300 fresh images of a built-in pool (the sweep's loader and split order), images read
through the audit's own loader (:func:`privbench.audit.sweep._read`); statistic and threshold are the audit's.
Deterministic: numpy Generator seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privbench.audit import copies as cp
from privbench.audit import edits as E
from privbench.audit.loader import Folder
from privbench.audit.risks import CANNOT_TEST, _conformal, _nndr, near_copy
from privbench.audit.sweep import _pool, _read

RATE = 0.01
N = 300
BAR = E.chain(E.crop(0.05), E.shift(2), E.brightness(0.12), E.reencode("JPEG", 70))


def corner_crop_then_shift(share: float = 0.05, px: int = 2) -> E.Edit:
    """Within the bar: :func:`privbench.audit.edits.crop`'s cut (``round(share · side)`` rows and columns) taken
    wholly from one random corner and resized back, then a ``px`` shift on both axes *towards that corner* (the
    shift edit itself allows ``px`` on one axis and up to ``px`` on the other): the two displacements add up."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        import cv2
        from PIL import Image

        h, w = a.shape[:2]
        ch, cw = max(1, round(h * share)), max(1, round(w * share))
        sy, sx = (1 if g.random() < 0.5 else -1 for _ in range(2))
        left, top = (cw if sx > 0 else 0), (ch if sy > 0 else 0)
        b = np.asarray(Image.fromarray(a).crop((left, top, left + w - cw, top + h - ch))
                       .resize((w, h), Image.Resampling.BICUBIC))
        m = np.float32([[1, 0, -sx * px], [0, 1, -sy * px]])
        return cv2.warpAffine(b, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    return edit


def frame(px: int, value: int = 255) -> E.Edit:
    """A ``px``-pixel frame of grey level ``value`` drawn over the image's edge."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        a = a.copy()
        a[:px], a[-px:], a[:, :px], a[:, -px:] = value, value, value, value
        return a
    return edit


class _Set:
    def __init__(self, dataset: str) -> None:
        x = _pool(dataset, 3 * N)
        self.orig = x[:N]
        self.read = [_read(a) for a in x]
        self.c_o = cp.canonical(np.stack(self.read[:N]))
        c_a = cp.canonical(np.stack(self.read[N:2 * N]))
        self.base = {"aux": np.sort(_nndr(cp.copy_distances(c_a, self.c_o)[0])),
                     "leave-one-out": np.sort(_nndr(cp.copy_distances(self.c_o, self.c_o, exclude_self=True)[0]))}

    def recall(self, edit: E.Edit, seed: int = 7, n: int = 100) -> dict[str, float]:
        g = np.random.default_rng(seed)
        src = np.sort(g.choice(np.flatnonzero(self.c_o.structured), n, replace=False))
        d, idx = cp.copy_distances(cp.canonical(np.stack([_read(edit(self.orig[i], g)) for i in src])), self.c_o)
        out = {k: float(_conformal(b, _nndr(d), RATE).mean()) for k, b in self.base.items()}
        out["found"] = float(np.mean(idx[:, 0] == src))
        return out


@pytest.fixture(scope="module")
def digits() -> _Set:
    return _Set("mnist5k")


@pytest.fixture(scope="module")
def photos() -> _Set:
    return _Set("photo-patches")


def _folder(images: list[np.ndarray], tag: str) -> Folder:
    return Folder(Path(tag), np.stack(images), [f"{tag}{i:04d}.png" for i in range(len(images))],
                  ["x"] * len(images))


def _audit(s: _Set, release: list[np.ndarray], aux: list[np.ndarray] | None):
    return near_copy(_folder(release, "r"), _folder(s.read[:N], "o"), None if aux is None else _folder(aux, "a"),
                     RATE, np.random.default_rng(0))


def _planted(s: _Set, n: int = 30, seed: int = 11) -> list[np.ndarray]:
    g = np.random.default_rng(seed)
    return [_read(BAR(s.orig[i], g)) for i in g.choice(np.flatnonzero(s.c_o.structured), n, replace=False)]


# ------------------------------------------------------------------ 1. failure within the claim


@pytest.mark.parametrize("name", ["digits", pytest.param("photos", marks=pytest.mark.xfail(strict=True, reason=(
    "measured after the fix: photo tiles 0.91 / 0.91 (aux / leave-one-out), the original found for 0.94; of the 9 "
    "misses 2 are candidates missed with a true-pair distance of 0.11-0.16, 2 lose to a neighbouring tile of the "
    "same photo (the NNDR blind spot), 5 have true-pair distances of 0.35-0.74 (displacement ~4 px at the corner "
    "plus a 6.7% zoom, beyond RADIUS = 3); docs/AUDIT.md, near-copy, limits")))])
def test_corner_crop_plus_shift_towards_it(request: pytest.FixtureRequest, name: str) -> None:
    """Crop 5% from one corner + 2 px shift towards the same corner + brightness ±12% + JPEG q70: every edit is
    within the bar. Measured (100 copies): digits recall 0.94 / 0.94 (aux / leave-one-out; 0.92 / 0.92 on 250
    copies where the sweep's random-direction bar gives 0.99 on the same originals), photo tiles 0.93 / 0.93 (the
    random bar 0.97); one-sided on one axis only: 0.96 digits, 0.93 photos. The displacements add to ~3 canonical
    px plus a 5% zoom, the edge of RADIUS = 3 and of the ±2 px candidate moves. Fixed for digits by moving the
    candidate queries ±3 px (:data:`privbench.audit.copies.QUERY_SHIFTS`); photo tiles stay below the bar."""
    r = request.getfixturevalue(name).recall(E.chain(corner_crop_then_shift(), E.brightness(0.12),
                                                     E.reencode("JPEG", 70)))
    assert r["aux"] >= 0.95 and r["leave-one-out"] >= 0.95, r


# ------------------------------------------------------------------ 2. held: the bar's edits plus a mirror


@pytest.mark.parametrize("name", ["digits", "photos"])
def test_bar_plus_horizontal_flip_is_flagged(request: pytest.FixtureRequest, name: str) -> None:
    """Held (mirror images are candidates): measured 0.97 / 0.97 on digits and on photo tiles."""
    r = request.getfixturevalue(name).recall(E.chain(BAR, E.hflip()))
    assert r["aux"] >= 0.95 and r["leave-one-out"] >= 0.95, r


# ------------------------------------------------------------------ 3. limitation outside the claim: a frame


@pytest.mark.xfail(strict=True, reason="measured: the bar's edits then a 1-px white frame on a 28 px digit: "
                   "recall 0.86 / 0.86 (aux / leave-one-out), original among the candidates 0.86 (photo tiles "
                   "0.62); a 2-px frame 0.48; a 1-px black frame 0.97. docs/AUDIT.md does not name frames")
def test_bar_plus_one_pixel_white_frame(digits: _Set) -> None:
    r = digits.recall(E.chain(BAR, frame(1, 255)))
    assert r["aux"] >= 0.95 and r["leave-one-out"] >= 0.95, r


# ------------------------------------------------------------------ 4. limitation outside the claim: poisoned aux


@pytest.mark.xfail(strict=True, reason="measured: an aux of 300 digits of which 3 (= floor(alpha (m + 1))) are "
                   "verbatim originals: their NNDR is 0, the threshold becomes 0.0 and 0 of 30 planted bar-edited "
                   "copies (10% of the release) are flagged: status 'no copy found', value 0.000, p0 0.000; CLI "
                   "with --fail-on near-copy=0.02 exits 0 (5 poisoned: the same). Clean aux: 30 of 30, value 0.09. "
                   "docs/AUDIT.md assumes aux = fresh images but does not say the aux is never checked for copies")
def test_aux_poisoned_with_three_originals(digits: _Set) -> None:
    planted, fresh = _planted(digits), digits.read[2 * N:3 * N - 30]
    aux = digits.read[N:2 * N - 3] + digits.read[:3]
    r = _audit(digits, planted + fresh, aux)
    assert r.detail["flagged"] >= 28 and r.detail["status"] == "copies found", r.detail


def test_clean_aux_and_two_poisoned_still_find_the_copies(digits: _Set) -> None:
    """Held: with a clean aux all 30 planted copies are flagged; 2 verbatim originals in aux (< floor(alpha
    (m + 1)) = 3) do not yet move the threshold to 0."""
    planted, fresh = _planted(digits), digits.read[2 * N:3 * N - 30]
    for aux in (digits.read[N:2 * N], digits.read[N:2 * N - 2] + digits.read[:2]):
        r = _audit(digits, planted + fresh, aux)
        assert r.detail["flagged"] >= 28 and r.value > 0.05, r.detail


# ------------------------------------------------------------------ held: repeated copy, small baseline


def test_one_copy_repeated_30_times_is_flagged_30_times(digits: _Set) -> None:
    planted = _planted(digits, n=1)
    r = _audit(digits, planted * 30 + digits.read[2 * N:2 * N + 270], digits.read[N:2 * N])
    assert r.detail["flagged"] >= 30 and r.detail["status"] == "copies found", r.detail


def test_a_98_image_aux_is_not_tested_and_never_passes(digits: _Set) -> None:
    """Held: 98 aux images at 1% -> 'could not test at this rate' (CLI with --fail-on: exit 1, measured)."""
    r = _audit(digits, _planted(digits, n=10) + digits.read[2 * N:2 * N + 30], digits.read[N:N + 98])
    assert r.value is None and r.detail["status"] == CANNOT_TEST and CANNOT_TEST in r.reason
