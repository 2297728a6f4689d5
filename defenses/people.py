"""Where the people are in a clip: pluggable person estimators (masks and 2-D keypoints) for video defenses.

Estimators, by id in :data:`ESTIMATORS`:

- ``ground-truth``: the clips' own annotations (``ImageSet.masks`` / ``keypoints``), e.g. ``synthetic-actions``.
  The defender annotates its own data; attacker-chosen clips passed to the public transform carry theirs.
- ``hog``: OpenCV's HOG + linear-SVM people detector (Dalal & Triggs, CVPR 2005), per frame on an upscaled
  frame; masks are the detected boxes, no keypoints.
- ``mediapipe``: MediaPipe Pose (BlazePose, Bazarevsky et al., 2020) with its segmentation, from the model files
  the ``mediapipe==0.10.14`` wheel bundles; keypoints mapped to :data:`benchmark.data.actions.JOINTS`.

Each returns :class:`People` for clips ``(N, T, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from benchmark.contracts import ImageSet
from benchmark.data.actions import JOINTS
from benchmark.errors import InputError
from benchmark.registry import Registry


@dataclass(frozen=True)
class People:
    """``masks (N, T, 1, H, W)`` bool where a person is; ``keypoints (N, T, J, 2)`` pixel (x, y) in the order of
    :data:`~benchmark.data.actions.JOINTS`, NaN where a joint was not found, or ``None`` (no pose)."""

    masks: Tensor
    keypoints: Optional[Tensor]


class PersonEstimator(ABC):
    """Finds people in clips; ``gives_pose`` says whether it returns keypoints."""

    gives_pose: bool = True

    @abstractmethod
    def estimate(self, clips: ImageSet) -> People:
        """People in ``clips.images (N, T, C, H, W)`` in [0, 1]."""


ESTIMATORS: Registry[type[PersonEstimator]] = Registry("person estimator")


def as_clips(x: Tensor | ImageSet) -> ImageSet:
    """Clips as an :class:`ImageSet` (raw tensors get placeholder labels and no annotations)."""
    if isinstance(x, ImageSet):
        clips = x
    else:
        clips = ImageSet(x, torch.zeros(len(x), dtype=torch.int64))
    if not clips.is_video:
        raise InputError(f"expected clips (N, T, C, H, W), got {tuple(clips.images.shape)}")
    return clips


@ESTIMATORS.register("ground-truth")
class GroundTruth(PersonEstimator):
    """The annotations that come with the clips."""

    def estimate(self, clips: ImageSet) -> People:
        if clips.masks is None or clips.keypoints is None:
            raise InputError("person estimator 'ground-truth' needs clips annotated with masks and keypoints "
                             "(e.g. synthetic-actions); for raw video use estimator 'mediapipe' or 'hog'")
        return People(clips.masks.bool(), clips.keypoints.float())


def _frames_uint8(clips: ImageSet) -> np.ndarray:
    """``(N, T, H, W, 3)`` uint8 RGB."""
    x = clips.images
    if x.shape[2] == 1:
        x = x.expand(-1, -1, 3, -1, -1)
    return (x.permute(0, 1, 3, 4, 2) * 255).round().to(torch.uint8).numpy()


@ESTIMATORS.register("hog")
class Hog(PersonEstimator):
    """OpenCV's default HOG people detector; frames are upscaled so a person can fill its 64×128 window."""

    gives_pose = False

    def __init__(self, min_height: int = 256) -> None:
        import cv2

        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.min_height = min_height

    def boxes(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Person boxes ``(x, y, w, h)`` in the pixels of ``frame (H, W, 3)`` uint8."""
        import cv2

        h = frame.shape[0]
        scale = max(1.0, self.min_height / h)
        big = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale > 1 else frame
        found, _ = self._hog.detectMultiScale(cv2.cvtColor(big, cv2.COLOR_RGB2GRAY), winStride=(8, 8),
                                              padding=(8, 8), scale=1.05)
        return [tuple(int(round(v / scale)) for v in b) for b in found]  # type: ignore[misc]

    def estimate(self, clips: ImageSet) -> People:
        frames = _frames_uint8(clips)
        n, t, h, w = frames.shape[:4]
        masks = torch.zeros(n, t, 1, h, w, dtype=torch.bool)
        for i in range(n):
            for j in range(t):
                for x, y, bw, bh in self.boxes(frames[i, j]):
                    masks[i, j, 0, max(0, y):y + bh, max(0, x):x + bw] = True
        return People(masks, None)


#: MediaPipe Pose landmark indices for each of JOINTS (midpoints for neck and pelvis).
_MP = {"head": (0,), "neck": (11, 12), "pelvis": (23, 24), "l_shoulder": (11,), "l_elbow": (13,), "l_wrist": (15,),
       "r_shoulder": (12,), "r_elbow": (14,), "r_wrist": (16,), "l_hip": (23,), "l_knee": (25,), "l_ankle": (27,),
       "r_hip": (24,), "r_knee": (26,), "r_ankle": (28,)}


@ESTIMATORS.register("mediapipe")
class MediaPipe(PersonEstimator):
    """MediaPipe Pose with segmentation (offline: the 0.10.14 wheel bundles its .tflite models)."""

    def __init__(self) -> None:
        try:
            import mediapipe as mp  # noqa: F401
            from mediapipe.python.solutions import pose  # noqa: F401
        except ImportError:
            raise InputError(
                "person estimator 'mediapipe' needs mediapipe 0.10.14, which bundles its pose models: "
                "pip install --no-deps mediapipe==0.10.14 absl-py attrs flatbuffers 'protobuf>=4.25.3,<5' "
                "(later versions ship no model files)") from None

    def estimate(self, clips: ImageSet) -> People:
        from mediapipe.python.solutions import pose as mp_pose

        frames = _frames_uint8(clips)
        n, t, h, w = frames.shape[:4]
        masks = torch.zeros(n, t, 1, h, w, dtype=torch.bool)
        kps = torch.full((n, t, len(JOINTS), 2), float("nan"))
        for i in range(n):
            with mp_pose.Pose(static_image_mode=False, model_complexity=1, enable_segmentation=True) as est:
                for j in range(t):
                    res = est.process(np.ascontiguousarray(frames[i, j]))
                    if res.pose_landmarks is None:
                        continue
                    lm = res.pose_landmarks.landmark
                    for k, name in enumerate(JOINTS):
                        pts = [(lm[m].x * w, lm[m].y * h) for m in _MP[name]]
                        kps[i, j, k] = torch.tensor(np.mean(pts, axis=0))
                    if res.segmentation_mask is not None:
                        masks[i, j, 0] = torch.from_numpy(res.segmentation_mask > 0.5)
        return People(masks, kps)


def estimator(name: str) -> PersonEstimator:
    """A fresh estimator by id (raises :class:`InputError` for an unknown id or a missing package)."""
    return ESTIMATORS.get(name)()
