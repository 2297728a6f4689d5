"""Bitrate of what a defense actually coded (real bytes, never an estimate)."""

from __future__ import annotations

from typing import Sequence


def bits_per_pixel(payloads: Sequence[bytes], height: int, width: int) -> dict[str, float]:
    """Mean bytes per item and bits per pixel of coded ``payloads`` for ``height×width`` images."""
    if not payloads:
        raise ValueError("no payloads to measure")
    total = sum(len(p) for p in payloads)
    mean_bytes = total / len(payloads)
    return {"bytes_per_image": mean_bytes, "bpp": 8.0 * mean_bytes / (height * width), "total_bytes": float(total)}
