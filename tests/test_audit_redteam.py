"""Red-team of the near-copy audit (docs/AUDIT.md, near-copy; issue 26's bar): a careless or hostile release
pipeline, an untrusted ``--aux`` and careless originals against :func:`privbench.audit.risks.near_copy` and
:mod:`privbench.audit.copies`.

- Failures within the documented claim are plain tests (they fail until fixed).
- Limitations outside the claim that the docs do not admit are ``xfail(strict=True)`` with the measured numbers.
- Attacks that held assert the behaviour, as regression guards.

Images go through the audit's own loader (:func:`privbench.audit.sweep._read`, or the JPEG bytes), so every
number here is what ``privbench audit`` computes on the same files. Deterministic: fixed numpy Generator seeds.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from privbench.audit import copies as cp
from privbench.audit import edits as E
from privbench.audit.loader import Folder, load_image_bytes
from privbench.audit.risks import CANNOT_TEST, _conformal, _nndr, near_copy
from privbench.audit.sweep import _pool, _read

RATE = 0.01
#: issue 26's combined edit, as the sweep draws it (random directions)
COMBINED = E.chain(E.crop(0.05), E.shift(2), E.brightness(0.12), E.reencode("JPEG", 70))


# ---------------------------------------------------------------- helpers


def _crop_exact(share: float, top: float, left: float, bottom: float, right: float) -> E.Edit:
    """Cut ``share`` of the height (weights ``top``/``bottom``) and of the width (``left``/``right``), sub-pixel
    exact, and resize back (bicubic): ``_crop_exact(0.05, 1, 1, 0, 0)`` is a 5% crop taken from the top-left."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        from PIL import Image

        h, w = a.shape[:2]
        box = (w * share * left, h * share * top, w - w * share * right, h - h * share * bottom)
        return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BICUBIC, box=box))
    return edit


def _crop_pixels(top: int, left: int) -> E.Edit:
    """:func:`privbench.audit.edits.crop` (0.05) with its random split fixed: ``top``/``left`` of the cut rows and
    columns taken from the top/left (an edit the sweep itself draws)."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        from PIL import Image

        h, w = a.shape[:2]
        ch, cw = max(1, round(h * 0.05)), max(1, round(w * 0.05))
        box = (cw * left, ch * top, w - cw * (1 - left), h - ch * (1 - top))
        return np.asarray(Image.fromarray(a).crop(box).resize((w, h), Image.Resampling.BICUBIC))
    return edit


def _shift(dy: int, dx: int) -> E.Edit:
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        import cv2

        m = np.float32([[1, 0, dx], [0, 1, dy]])
        return cv2.warpAffine(a, m, (a.shape[1], a.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    return edit


def _scale(f: float) -> E.Edit:
    return lambda a, g: np.clip(np.rint(a.astype(np.float64) * f), 0, 255).astype(np.uint8)


def _frame(value: int) -> E.Edit:
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        a = a.copy()
        a[0], a[-1], a[:, 0], a[:, -1] = value, value, value, value
        return a
    return edit


def _pad(share: float) -> E.Edit:
    """A black border of ``share`` of the side on every side (the copy shrunk inside a larger canvas)."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        h, w = a.shape[:2]
        p = int(round(h * share))
        out = np.zeros((h + 2 * p, w + 2 * p, 3), np.uint8)
        out[p:p + h, p:p + w] = a
        return out
    return edit


def _down_up(s: float) -> E.Edit:
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        from PIL import Image

        h, w = a.shape[:2]
        small = Image.fromarray(a).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
        return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))
    return edit


def _grey(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
    y = np.rint(a.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    return np.repeat(y[..., None], 3, -1)


def _up(n: int) -> E.Edit:
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.fromarray(a).resize((n, n), Image.Resampling.BICUBIC))
    return edit


def _jpeg_read(a: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return load_image_bytes(buf.getvalue(), 64)[0]


def _folder(images: list[np.ndarray], tag: str) -> Folder:
    arr = np.stack(images)
    return Folder(Path(tag), arr, [f"{tag}{i:04d}.png" for i in range(len(arr))], ["x"] * len(arr))


def _near_copy(release: list[np.ndarray], originals: list[np.ndarray], aux: list[np.ndarray] | None):
    return near_copy(_folder(release, "r"), _folder(originals, "o"), None if aux is None else _folder(aux, "a"),
                     RATE, np.random.default_rng(0))


class _Set:
    """400 originals, 400 aux and 600 fresh images of a built-in pool (the sweep's split), canonical, with both
    baselines' NNDR values."""

    def __init__(self, dataset: str) -> None:
        x = _pool(dataset, 1400)
        self.x = x
        self.orig, self.aux, self.fresh = x[:400], x[400:800], x[800:]
        self.read = [_read(a) for a in x]
        self.c_o = cp.canonical(np.stack(self.read[:400]))
        c_a = cp.canonical(np.stack(self.read[400:800]))
        self.base = {"aux": np.sort(_nndr(cp.copy_distances(c_a, self.c_o)[0])),
                     "leave-one-out": np.sort(_nndr(cp.copy_distances(self.c_o, self.c_o, exclude_self=True)[0]))}

    def recall(self, edit: E.Edit, seed: int = 1, n: int = 100, src: np.ndarray | None = None) -> dict[str, float]:
        """Recall of ``n`` edited copies of structured originals at ``RATE``, by baseline."""
        g = np.random.default_rng(seed)
        if src is None:
            src = np.sort(g.choice(np.flatnonzero(self.c_o.structured), n, replace=False))
        c = cp.canonical(np.stack([_read(edit(self.orig[i], g)) for i in src]))
        d, idx = cp.copy_distances(c, self.c_o)
        stat = _nndr(d)
        out = {k: float(_conformal(b, stat, RATE).mean()) for k, b in self.base.items()}
        out["found"] = float(np.mean(idx[:, 0] == src))
        return out


@pytest.fixture(scope="module")
def digits() -> _Set:
    return _Set("mnist5k")


@pytest.fixture(scope="module")
def photos() -> _Set:
    return _Set("photo-patches")


def _copies_and_fresh(s: _Set, seed: int = 3, n: int = 50) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    g = np.random.default_rng(seed)
    src = g.choice(396, n, replace=False)  # originals 396..399 are left for the attacks below
    return src, [_read(COMBINED(s.x[i], g)) for i in src], s.read[800:1250]


# ---------------------------------------------------------------- failures within the claim


@pytest.mark.parametrize("crop", [
    pytest.param(_crop_exact(0.05, 1, 1, 0, 0), id="exact-5%-top-left"),      # was 0.79 / 0.79 with ±2 px query moves
    pytest.param(_crop_pixels(1, 1), id="sweep-crop-top-left-1px"),           # was 0.90 / 0.90
])
def test_bar_corner_crop_top_left_then_shift_2px_up_left_digits(digits: _Set, crop: E.Edit) -> None:
    """Within the bar: crop <= 5% (taken from the top-left), a 2 px shift (up-left, the same direction: the two
    displacements add to ~3 canonical px at the centre), brightness -12%, JPEG q70, on mnist5k. Measured: recall
    0.79 (exact 5% crop) and 0.90 (the sweep's own 1 px crop of a 28 px digit) with --aux and leave-one-out; the
    original is not among the faiss candidates of the misses (its verified distance, ~0.10, would win). The 0.96
    of docs/AUDIT.md is an average over random edit directions, not a bound for every edit within the bar. Held
    since the candidate queries move by ±3 px instead of ±2 (:data:`privbench.audit.copies.QUERY_SHIFTS`)."""
    r = digits.recall(E.chain(crop, _shift(-2, -2), _scale(0.88), E.reencode("JPEG", 70)))
    assert r["aux"] >= 0.95 and r["leave-one-out"] >= 0.95, r


def test_flat_aux_images_do_not_stand_in_for_a_baseline(digits: _Set) -> None:
    """The docs: a flat image "never sets a threshold", and fewer than 99 baseline images at 1% read "could not
    test at this rate". Flat aux images are +inf NNDRs counted in ``m``: 40 digits + 60 flat tiles (m = 100) run
    the test and flag 40 of 600 fresh digits (6.7% at a nominal 1%); an aux of 100 flat tiles flags all 600 fresh
    digits (value 1.0, a --fail-on gate fails on a clean release). Held since flat baseline images are left out of
    the baseline (:func:`privbench.audit.risks.near_copy`): 40 structured aux images cannot test at 1%."""
    fresh = digits.read[800:]
    flat = [np.full((64, 64, 3), v, np.uint8) for v in np.linspace(0, 255, 100).astype(np.uint8)]
    for aux in (digits.read[400:440] + flat[:60], flat):
        r = _near_copy(fresh, digits.read[:400], aux)
        untested = r.value is None and r.detail["status"] == CANNOT_TEST
        assert untested or r.estimate <= RATE + 3 * np.sqrt(RATE * (1 - RATE) / len(fresh)), (r.estimate, r.detail)


# ---------------------------------------------------------------- limitations the docs do not admit


@pytest.mark.xfail(strict=True, reason="measured: 2 exact duplicate pairs among 400 originals (1%) give 4 "
                   "leave-one-out NNDRs of 0, the threshold falls to 0 and none of 50 combined-edit copies (of "
                   "other originals) is flagged: status 'no copy found', value -0.010, CLI exit 0 under --fail-on "
                   "near-copy=0.02; JPEG-q90 re-saves instead of exact duplicates: the same; the docs say only that "
                   "such originals 'hide copies of them'")
def test_two_duplicate_pairs_among_the_originals_hide_every_copy_leave_one_out(digits: _Set) -> None:
    src, copies, fresh = _copies_and_fresh(digits)
    originals = digits.read[:398] + digits.read[:2]  # two originals stored twice
    r = _near_copy(copies + fresh, originals, None)
    assert r.detail["status"] != "no copy found" and r.detail["flagged"] >= 45, r.detail


def test_duplicate_originals_with_aux_still_find_the_copies(digits: _Set) -> None:
    """Held (the docs' advice, give --aux): the same originals with an aux baseline flag the copies."""
    src, copies, fresh = _copies_and_fresh(digits)
    r = _near_copy(copies + fresh, digits.read[:398] + digits.read[:2], digits.read[400:800])
    assert r.detail["flagged"] >= 50 and r.value > 0.08, r.detail


@pytest.mark.xfail(strict=True, reason="measured: an aux of 400 digits of which 4 (1%) are verbatim originals "
                   "(not checked against the originals) drops the threshold to ~0: 0 of 50 combined-edit copies "
                   "flagged, status 'no copy found', value -0.010, CLI exit 0 under --fail-on near-copy=0.02 "
                   "(1 or 2 poisoned aux images: no effect; 8 edited copies in aux: 34 of 50)")
def test_an_aux_holding_a_few_originals_hides_every_copy(digits: _Set) -> None:
    src, copies, fresh = _copies_and_fresh(digits)
    aux = digits.read[400:796] + digits.read[396:400]  # 4 originals passed off as fresh images
    r = _near_copy(copies + fresh, digits.read[:400], aux)
    assert r.detail["status"] != "no copy found" and r.detail["flagged"] >= 45, r.detail


@pytest.mark.xfail(strict=True, reason="measured: 50 combined-edit copies (all flagged) padded with 950 flat "
                   "images: flat release images count in the share, p = 0.05, value 0.040, under a --fail-on "
                   "near-copy=0.05 gate (exit 0); without the padding the value is 1.0")
def test_flat_padding_does_not_dilute_the_copy_share(digits: _Set) -> None:
    src, copies, _ = _copies_and_fresh(digits)
    flat = [np.full((64, 64, 3), v, np.uint8) for v in np.linspace(0, 255, 950).astype(np.uint8)]
    r = _near_copy(copies + flat, digits.read[:400], digits.read[400:800])
    assert r.detail["flagged"] == 50 and r.value > 0.05, (r.value, r.detail)


@pytest.mark.xfail(strict=True, reason="measured: a 1-pixel white frame drawn on a 32 px photo tile (nothing "
                   "else): recall 0.71 / 0.71 (aux / leave-one-out), the original among the candidates for 0.71 "
                   "(the verification leaves the border out, the faiss thumbnails do not); 0.89 at 64 px; with the "
                   "combined edit 0.61")
def test_a_one_pixel_frame_on_photo_tiles(photos: _Set) -> None:
    r = photos.recall(_frame(255))
    assert r["aux"] >= 0.95 and r["leave-one-out"] >= 0.95, r


@pytest.mark.parametrize("edit", [
    pytest.param(_pad(0.10), id="black-border-10%", marks=pytest.mark.xfail(strict=True, reason=(
        "measured: the copy inside a black border of 10% of its side: recall 0.03 / 0.03 on digits (0.18 / 0.16 "
        "on photo tiles); zoom-outs are not searched (ZOOMS crop only)"))),
    pytest.param(lambda a, g: np.ascontiguousarray(np.rot90(a)), id="rot90", marks=pytest.mark.xfail(
        strict=True, reason="measured: rotated 90 degrees: recall 0.00 / 0.00 on digits (0.05 / 0.04 photo tiles)")),
    pytest.param(_down_up(0.35), id="down-0.35-up", marks=pytest.mark.xfail(strict=True, reason=(
        "measured: downscaled to 35% and back (bilinear): recall 0.50 / 0.46 on digits, the original among the "
        "candidates for 0.89 (0.5 and back: 0.95)"))),
])
def test_geometric_edits_outside_the_bar_that_the_docs_do_not_name(digits: _Set, edit: E.Edit) -> None:
    r = digits.recall(edit)
    assert r["aux"] >= 0.95 and r["leave-one-out"] >= 0.95, r


@pytest.mark.xfail(strict=True, reason="measured: photo tiles with structure but RMS contrast 4-8 grey levels (46 "
                   "of 400 originals), the bar's edits with brightness -12%: recall 0.85 / 0.80 (aux / leave-one-out); "
                   "3 of the 46 copies become flat (never tested); the docs give the weak (< 4) recall only")
def test_low_contrast_structured_photo_tiles_darkened(photos: _Set) -> None:
    src = np.flatnonzero(photos.c_o.structured & (photos.c_o.rms < 8))
    r = photos.recall(E.chain(E.crop(0.05), E.shift(2), _scale(0.88), E.reencode("JPEG", 70)), src=src)
    assert r["aux"] >= 0.95 and r["leave-one-out"] >= 0.95, r


# ---------------------------------------------------------------- attacks that held (regression guards)


@pytest.mark.parametrize("name", ["digits", "photos"])
@pytest.mark.parametrize("edit", [
    pytest.param(E.chain(COMBINED, E.hflip()), id="combined+hflip"),                       # 1.00 / 0.99
    pytest.param(E.chain(_grey, COMBINED), id="grey+combined"),                            # 1.00 / 0.99
    pytest.param(E.chain(_crop_exact(0.05, 1, 0, 0, 0), _shift(-2, 0), _scale(0.88), E.reencode("JPEG", 70)),
                 id="crop-top-5%+shift-up-2+dark+jpeg"),                                   # 0.98 / 0.98
    pytest.param(E.chain(_up(64), COMBINED), id="combined-at-64px"),                       # 1.00 / 1.00
])
def test_held_edits_are_flagged(request: pytest.FixtureRequest, name: str, edit: E.Edit) -> None:
    r = request.getfixturevalue(name).recall(edit)
    assert r["aux"] >= 0.95 and r["leave-one-out"] >= 0.95, r


def test_a_baseline_of_98_cannot_test_and_99_can(digits: _Set) -> None:
    _, copies, _ = _copies_and_fresh(digits, n=20)
    small = _near_copy(copies, digits.read[:400], digits.read[400:498])
    assert small.value is None and small.detail["status"] == CANNOT_TEST and CANNOT_TEST in small.reason
    enough = _near_copy(copies, digits.read[:400], digits.read[400:499])
    assert enough.value is not None and enough.detail["status"] == "copies found"
    assert enough.detail["flagged"] >= 15, enough.detail  # the threshold is the smallest of 99 values (17 of 20)


def test_a_release_of_one_copy_or_one_copy_repeated(digits: _Set) -> None:
    _, copies, _ = _copies_and_fresh(digits, n=1)
    one = _near_copy(copies, digits.read[:400], digits.read[400:600])
    many = _near_copy(copies * 200, digits.read[:400], digits.read[400:600])
    assert one.detail["flagged"] == 1 and one.value > 0.95
    assert many.detail["flagged"] == 200 and many.value > 0.95


def test_copies_of_near_duplicate_originals_are_the_documented_blind_spot(digits: _Set) -> None:
    """Documented (docs/AUDIT.md): a copy of an original with a near-duplicate among the originals (here a JPEG
    q90 re-save) is rarely flagged, even with --aux (measured: 1 of 20)."""
    g = np.random.default_rng(3)
    originals = digits.read[:380] + [_jpeg_read(digits.x[i], 90) for i in range(20)]
    copies = [_read(COMBINED(digits.x[i], g)) for i in range(20)]
    r = _near_copy(copies, originals, digits.read[400:800])
    assert r.detail["flagged"] <= 5, r.detail
