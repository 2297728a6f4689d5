"""Issue 26: copies a release pipeline edited are flagged at a stated false-flag rate (docs/AUDIT.md, the sweep).

The combination the audit is held to (crop 5%, shift 2 px, brightness ±12%, JPEG q70) on real digits, where
fresh images are look-alikes, with and without aux; the same on photo tiles, where it is not met yet (strict
xfail). Each edit alone on digits. False flags are measured on fresh images from the same pool, which the
conformal rule bounds by the nominal rate in expectation; the assertion allows the sampling error of that count.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.audit.sweep import sweep

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


@pytest.mark.xfail(strict=True, reason="issue 26 open: on 32 px photo tiles the combined edit is flagged 0.88 "
                                       "(docs/AUDIT.md); low-contrast textures lose their identity to crop + shift + "
                                       "JPEG q70")
def test_combined_edits_of_photo_tiles_are_flagged_with_and_without_aux() -> None:
    row = sweep("photo-patches", 400, 100, 600, RATE, edits=(COMBINED,))[0]
    assert row["recall aux"] >= 0.95 and row["recall leave-one-out"] >= 0.95, row


def test_a_copy_whose_edit_lowered_its_contrast_is_still_tested() -> None:
    """The flat rule's hysteresis (:data:`benchmark.audit.copies.STRUCTURED` over :data:`~.FLAT`): a structured
    original of little contrast, darkened by 12%, stays testable and is matched to its original. With one threshold
    at 2.0 grey levels such a copy was flat, never flagged."""
    import cv2

    from benchmark.audit import copies as cp

    g = np.random.default_rng(0)
    tex = np.stack([cv2.GaussianBlur(g.normal(size=(32, 32)).astype(np.float32), (0, 0), 1.5) for _ in range(60)])
    tex = tex / tex.std((1, 2), keepdims=True)
    originals = np.clip(np.round(128 + 2.4 * tex), 0, 255).astype(np.uint8)[..., None].repeat(3, -1)
    c_o = cp.canonical(originals)
    assert c_o.structured.all()
    copy = np.clip(np.round(originals[7].astype(float) * 0.88), 0, 255).astype(np.uint8)[None]
    c_c = cp.canonical(copy)
    assert not c_c.structured[0] and not c_c.flat[0], c_c.rms  # below the edit threshold, above the flat one
    d, idx = cp.copy_distances(c_c, c_o)
    assert idx[0, 0] == 7 and d[0, 0] < 0.5 * d[0, 1], (d, idx)
