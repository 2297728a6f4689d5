"""People and faces an off-the-shelf detector finds in frames: the residual-detection measure of video releases.

OpenCV's HOG + linear-SVM people detector (Dalal & Triggs, CVPR 2005) and its bundled Haar cascades for full
bodies, upper bodies and frontal faces (Viola & Jones, CVPR 2001; bundled with opencv-python < 5, which privbench
pins). Frames are upscaled so that small people fill the detectors' windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from privbench.core.errors import InputError

#: Haar cascades counted as independent detectors, by name.
CASCADES = {"fullbody": "haarcascade_fullbody.xml", "upperbody": "haarcascade_upperbody.xml",
            "face": "haarcascade_frontalface_default.xml"}

Box = tuple[int, int, int, int]


class HogPeople:
    """OpenCV's default HOG people detector on frames upscaled to at least ``min_height`` pixels."""

    def __init__(self, min_height: int = 576) -> None:
        import cv2

        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.min_height = min_height

    def boxes(self, frame: np.ndarray) -> list[Box]:
        """Person boxes ``(x, y, w, h)`` in the pixels of ``frame (H, W, 3)`` uint8 RGB."""
        import cv2

        scale = max(1.0, self.min_height / frame.shape[0])
        big = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale > 1 else frame
        found, _ = self._hog.detectMultiScale(cv2.cvtColor(big, cv2.COLOR_RGB2GRAY), winStride=(8, 8),
                                              padding=(8, 8), scale=1.05)
        return [tuple(int(round(v / scale)) for v in b) for b in found]  # type: ignore[misc]


class Cascade:
    """One bundled Haar cascade, on frames upscaled to at least ``min_height`` pixels."""

    def __init__(self, name: str, min_height: int = 576) -> None:
        import cv2

        path = Path(cv2.data.haarcascades) / CASCADES[name]
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise InputError(f"OpenCV cascade {path} is missing (opencv-python < 5 bundles it)")
        self.min_height = min_height

    def boxes(self, frame: np.ndarray) -> list[Box]:
        import cv2

        scale = max(1.0, self.min_height / frame.shape[0])
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale > 1:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        found = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=3)
        return [tuple(int(round(v / scale)) for v in b) for b in found]  # type: ignore[misc]


def detectors() -> dict[str, Any]:
    """The counted detectors by name: the independent cascades, and HOG (which the ``hog`` and ``top-down`` person
    estimators also use, so it is not independent of them)."""
    out: dict[str, Any] = {name: Cascade(name) for name in CASCADES}
    out["hog"] = HogPeople()
    return out


def count_detections(frames: np.ndarray) -> dict[str, list[int]]:
    """Detections per frame of each detector on ``frames (T, H, W, 3)`` uint8 RGB."""
    return {name: [len(d.boxes(f)) for f in frames] for name, d in detectors().items()}


def split_by_change(frames: np.ndarray, changed: np.ndarray, share: float = 0.3
                    ) -> dict[str, dict[str, list[int]]]:
    """Detections per frame of each detector on ``frames (T, H, W, 3)``, split by whether at least ``share`` of the
    box lies on ``changed (T, H, W)`` bool pixels (what a defense rewrote: an avatar, a redacted region) or not
    (pixels it left as they were: a person it missed is counted there)."""
    out = {}
    for name, d in detectors().items():
        on, off = [], []
        for f, c in zip(frames, changed):
            boxes = d.boxes(f)
            hits = [bool(c[max(0, y):y + h, max(0, x):x + w].mean() >= share) if w * h else False
                    for x, y, w, h in boxes]
            on.append(sum(hits))
            off.append(len(hits) - sum(hits))
        out[name] = {"changed": on, "unchanged": off}
    return out
