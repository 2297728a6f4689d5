"""The edits a careless release pipeline makes to a copy, at the strengths the near-copy audit is held to (issue 26;
docs/AUDIT.md, sweep). Each edit maps an RGB image ``(H, W, 3)`` uint8 and a numpy generator (for its random
direction) to the edited image; :func:`encode` writes the file. Used by the perturbation sweep
(``benchmarks/audit_sweep.py``) and its tests.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np

Edit = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _pil(a: np.ndarray):  # noqa: ANN202 (PIL.Image.Image)
    from PIL import Image

    return Image.fromarray(a)


def shift(px: int = 2) -> Edit:
    """Translate by ``px`` pixels on one axis and 0..``px`` on the other (random signs), edges replicated."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        import cv2

        d = [px * (1 if g.random() < 0.5 else -1), int(g.integers(-px, px + 1))]
        dy, dx = d if g.random() < 0.5 else d[::-1]
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        return cv2.warpAffine(a, m, (a.shape[1], a.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    return edit


def crop(share: float = 0.05) -> Edit:
    """Cut ``share`` of each side's length (split at random between its two ends) and resize back."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        from PIL import Image

        h, w = a.shape[:2]
        ch, cw = max(1, round(h * share)), max(1, round(w * share))
        top, left = int(g.integers(0, ch + 1)), int(g.integers(0, cw + 1))
        box = (left, top, left + w - cw, top + h - ch)
        return np.asarray(_pil(a).crop(box).resize((w, h), Image.Resampling.BICUBIC))
    return edit


def resize(scale: float = 0.75) -> Edit:
    """Resize to ``scale`` of the size (the file is smaller; the audit resizes it back)."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        from PIL import Image

        h, w = a.shape[:2]
        return np.asarray(_pil(a).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                         Image.Resampling.LANCZOS))
    return edit


def _tone(fn: Callable[[np.ndarray, float], np.ndarray], amount: float) -> Edit:
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        sign = 1.0 if g.random() < 0.5 else -1.0
        return np.clip(np.rint(fn(a.astype(np.float64) / 255.0, sign * amount) * 255.0), 0, 255).astype(np.uint8)
    return edit


def brightness(amount: float = 0.12) -> Edit:
    """Multiply by ``1 ± amount``."""
    return _tone(lambda x, s: x * (1 + s), amount)


def contrast(amount: float = 0.2) -> Edit:
    """Stretch or squeeze around the image's mean by ``1 ± amount``."""
    return _tone(lambda x, s: (x - x.mean()) * (1 + s) + x.mean(), amount)


def gamma(amount: float = 0.25) -> Edit:
    """Raise to the power ``1 + amount`` or ``1 / (1 + amount)``."""
    return _tone(lambda x, s: x ** ((1 + abs(s)) if s > 0 else 1 / (1 + abs(s))), amount)


def colour(hue_degrees: float = 12.0, saturation: float = 0.25) -> Edit:
    """Rotate the hue by ± ``hue_degrees`` and scale the saturation by ``1 ± saturation``."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        import cv2

        hsv = cv2.cvtColor(a, cv2.COLOR_RGB2HSV).astype(np.float64)  # OpenCV hue: 0..180
        hsv[..., 0] = (hsv[..., 0] + (1 if g.random() < 0.5 else -1) * hue_degrees / 2) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * (1 + (1 if g.random() < 0.5 else -1) * saturation), 0, 255)
        return cv2.cvtColor(np.rint(hsv).astype(np.uint8), cv2.COLOR_HSV2RGB)
    return edit


def reencode(fmt: str = "JPEG", quality: int = 70) -> Edit:
    """Encode as ``fmt`` (JPEG or WEBP) at ``quality`` and decode."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        from PIL import Image

        buf = io.BytesIO()
        _pil(a).save(buf, fmt, quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return edit


def blur(sigma: float = 1.0) -> Edit:
    """Gaussian blur of ``sigma`` pixels."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        import cv2

        return cv2.GaussianBlur(a, (0, 0), sigma)
    return edit


def noise(sigma: float = 8.0) -> Edit:
    """Additive Gaussian noise of ``sigma`` grey levels (of 255)."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        return np.clip(np.rint(a + g.normal(0, sigma, a.shape)), 0, 255).astype(np.uint8)
    return edit


def hflip() -> Edit:
    """Mirror left-right."""
    return lambda a, g: np.ascontiguousarray(a[:, ::-1])


def chain(*edits: Edit) -> Edit:
    """The edits applied in order."""
    def edit(a: np.ndarray, g: np.random.Generator) -> np.ndarray:
        for e in edits:
            a = e(a, g)
        return a
    return edit


#: The sweep: each edit alone, the combination the audit is held to (issue 26: JPEG q70, shift <= 2 px,
#: brightness ±12%, crop <= 5%), and everything at once.
SWEEP: dict[str, Edit] = {
    "shift 2 px": shift(2), "crop 5%": crop(0.05), "resize 75%": resize(0.75),
    "brightness ±12%": brightness(0.12), "contrast ±20%": contrast(0.2), "gamma 1.25": gamma(0.25),
    "colour: hue ±12°, saturation ±25%": colour(12.0, 0.25), "JPEG q70": reencode("JPEG", 70),
    "WebP q70": reencode("WEBP", 70), "blur σ=1 px": blur(1.0), "noise σ=8": noise(8.0), "horizontal flip": hflip(),
    "combined: crop 5% + shift 2 px + brightness ±12% + JPEG q70":
        chain(crop(0.05), shift(2), brightness(0.12), reencode("JPEG", 70)),
    "all of the above": chain(crop(0.05), shift(2), hflip(), gamma(0.25), contrast(0.2), colour(12.0, 0.25),
                              brightness(0.12), blur(1.0), noise(8.0), resize(0.75), reencode("WEBP", 70),
                              reencode("JPEG", 70)),
}
