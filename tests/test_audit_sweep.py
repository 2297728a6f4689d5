"""Issue 26: copies a release pipeline edited are flagged at a stated false-flag rate (docs/AUDIT.md, the sweep).

The combination the audit is held to (crop 5%, shift 2 px, brightness ±12%, JPEG q70) on real digits, where
fresh images are look-alikes, and on photo tiles with structure, with and without aux; each edit alone on digits.
The verification agrees with OpenCV's template matching. False flags are measured on fresh images from the same pool, which the
conformal rule bounds by the nominal rate in expectation; the assertion allows the sampling error of that count.
"""

from __future__ import annotations

import numpy as np
import pytest

from privbench.audit.sweep import sweep

COMBINED = "combined: crop 5% + shift 2 px + brightness ±12% + JPEG q70"
RATE = 0.01


def _false_flags_ok(row: dict, fresh: int) -> bool:
    """Measured false-flag rates within 3 binomial standard errors of the nominal rate."""
    slack = 3 * np.sqrt(RATE * (1 - RATE) / fresh)
    return all(row[f"false flags {k}"] <= RATE + slack for k in ("aux", "leave-one-out"))


def test_combined_edits_of_digits_are_flagged_with_and_without_aux() -> None:
    rows = sweep("mnist5k", 400, 100, 600, RATE, edits=(COMBINED,))  # the sizes of docs/AUDIT.md's table
    row = rows[0]
    assert row["recall aux"] >= 0.95 and row["recall leave-one-out"] >= 0.95, row
    assert _false_flags_ok(row, 600), row
    assert rows[-1]["flat originals"] == 0.0  # digits always have structure: every copy was testable


@pytest.mark.slow
def test_each_edit_alone_on_digits() -> None:
    rows = [r for r in sweep("mnist5k", 400, 40, 600, RATE) if "edit" in r]
    weak = {r["edit"]: r["recall leave-one-out"] for r in rows
            if r["edit"] != "all of the above" and min(r["recall aux"], r["recall leave-one-out"]) < 0.95}
    assert not weak, weak


def test_combined_edits_of_photo_tiles_are_flagged_with_and_without_aux() -> None:
    """Photo tiles with structure (RMS contrast of 4 grey levels or more); the weak ones are reported apart, and
    their recall is far lower (0.29 in docs/AUDIT.md): the sweep must say so rather than hide them."""
    rows = sweep("photo-patches", 400, 100, 600, RATE, edits=(COMBINED,))
    row, last = rows[0], rows[-1]
    assert row["recall aux"] >= 0.95 and row["recall leave-one-out"] >= 0.95, row
    assert _false_flags_ok(row, 600), row
    assert 0.1 < last["weak originals"] < 0.4 and last["weak copies"] > 50, last
    assert max(last["weak recall"].values()) < 0.6, last  # weak tiles are what limits photos, and are shown


def test_verification_agrees_with_opencv_template_matching() -> None:
    """:func:`privbench.audit.copies.verify` against ``cv2.matchTemplate`` (TM_CCOEFF_NORMED) of the query's interior
    over the original, pair by pair: an independent implementation of the same normalised cross-correlation."""
    import cv2

    from privbench.audit import copies as cp

    g = np.random.default_rng(1)
    q = cv2.GaussianBlur(g.normal(size=(40, 32, 32)).astype(np.float32).transpose(1, 2, 0), (0, 0), 1.0)
    q = np.ascontiguousarray(q.transpose(2, 0, 1))
    o = np.concatenate([np.roll(q[:10], (2, -3), (1, 2)) * 3 + 1, g.normal(size=(10, 32, 32)).astype(np.float32)])
    qi, oi = g.integers(0, 40, 200), g.integers(0, 20, 200)
    qi[:10], oi[:10] = np.arange(10), np.arange(10)  # the moved copies
    r = cp.RADIUS
    ref = np.array([np.sqrt(max(0.0, 2 * (1 - cv2.matchTemplate(o[b], q[a][r:-r, r:-r], cv2.TM_CCOEFF_NORMED).max())))
                    for a, b in zip(qi, oi)])
    got = cp.verify(q, o, qi, oi)
    assert np.allclose(got, ref, atol=2e-3), np.abs(got - ref).max()
    assert got[:10].max() < 0.01 and np.median(got[10:]) > 1.0


def test_a_recropped_copys_new_border_does_not_cost_it() -> None:
    """A copy cut from the same source 2 px further down and left (its border rows are content the original never
    had, as after a crop and a shift): whole-image matching pays for them, the interior match does not."""
    import cv2

    from privbench.audit import copies as cp

    g = np.random.default_rng(2)
    big = cv2.GaussianBlur(g.normal(size=(40, 40)).astype(np.float32), (0, 0), 0.8)
    z = cp._standardise(np.stack([big[4:36, 4:36], big[6:38, 2:34]]))
    whole = cp.verify_whole(z[1:], z[:1], np.array([0]), np.array([0]))[0]
    inner = cp.verify(z[1:], z[:1], np.array([0]), np.array([0]))[0]
    assert inner < 0.02 and whole > 0.3, (inner, whole)


def test_a_copy_whose_edit_lowered_its_contrast_is_still_tested() -> None:
    """The flat rule's hysteresis (:data:`privbench.audit.copies.STRUCTURED` over :data:`~.FLAT`): a structured
    original of little contrast, darkened by 12%, stays testable and is matched to its original. With one threshold
    at the edit threshold such a copy was flat, never flagged."""
    import cv2

    from privbench.audit import copies as cp

    g = np.random.default_rng(0)
    tex = np.stack([cv2.GaussianBlur(g.normal(size=(32, 32)).astype(np.float32), (0, 0), 1.5) for _ in range(60)])
    tex = tex / tex.std((1, 2), keepdims=True)
    originals = np.clip(np.round(128 + 4.8 * tex), 0, 255).astype(np.uint8)[..., None].repeat(3, -1)
    c_o = cp.canonical(originals)
    assert c_o.structured.all()
    copy = np.clip(np.round(originals[7].astype(float) * 0.88), 0, 255).astype(np.uint8)[None]
    c_c = cp.canonical(copy)
    assert not c_c.structured[0] and not c_c.flat[0], c_c.rms  # below the edit threshold, above the flat one
    d, idx = cp.copy_distances(c_c, c_o)
    assert idx[0, 0] == 7 and d[0, 0] < 0.5 * d[0, 1], (d, idx)
