"""Where the people are in a clip: pluggable person estimators (masks and 2-D keypoints) for video defenses.

Estimators, by id in :data:`ESTIMATORS`:

- ``ground-truth``: the clips' own annotations (``ImageSet.masks`` / ``keypoints``), e.g. ``synthetic-actions``.
  The defender annotates its own data; attacker-chosen clips passed to the public transform carry theirs.
- ``hog``: OpenCV's HOG + linear-SVM people detector (Dalal & Triggs, CVPR 2005), per frame on an upscaled
  frame; masks are the detected boxes, no keypoints.
- ``mediapipe``: MediaPipe Pose (BlazePose, Bazarevsky et al., 2020) with its segmentation, from the model files
  the ``mediapipe==0.10.14`` wheel bundles; keypoints mapped to :data:`privbench.data.actions.JOINTS`. One person
  per frame, who should fill a good part of it.
- ``top-down``: HOG boxes, then MediaPipe Pose on each box (upscaled): several small people per frame, as in
  street scenes (OpenCV's ``vtest.avi``), up to 8 per frame.

Each returns :class:`People` for clips ``(N, T, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from privbench.core.errors import InputError
from privbench.core.images import ImageSet
from privbench.core.registry import Registry
from privbench.data.actions import JOINTS
from privbench.metrics.people import HogPeople


@dataclass(frozen=True)
class People:
    """``masks (N, T, 1, H, W)`` bool where a person is; ``keypoints (N, T, P, J, 2)`` pixel (x, y) of up to ``P``
    people in the order of :data:`~privbench.data.actions.JOINTS`, NaN where a person or joint was not found, or
    ``None`` (no pose)."""

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
        return People(clips.masks.bool(), clips.keypoints.float().unsqueeze(2))  # one person per clip


def _frames_uint8(clips: ImageSet) -> np.ndarray:
    """``(N, T, H, W, 3)`` uint8 RGB."""
    x = clips.images
    if x.shape[2] == 1:
        x = x.expand(-1, -1, 3, -1, -1)
    return (x.permute(0, 1, 3, 4, 2) * 255).round().to(torch.uint8).numpy()


@ESTIMATORS.register("hog")
class Hog(PersonEstimator):
    """OpenCV's HOG people detector (:class:`privbench.metrics.people.HogPeople`); masks are its boxes."""

    gives_pose = False

    def __init__(self) -> None:
        self._hog = HogPeople()

    def boxes(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Person boxes ``(x, y, w, h)`` in the pixels of ``frame (H, W, 3)`` uint8."""
        return self._hog.boxes(frame)

    def estimate(self, clips: ImageSet) -> People:
        frames = _frames_uint8(clips)
        n, t, h, w = frames.shape[:4]
        masks = torch.zeros(n, t, 1, h, w, dtype=torch.bool)
        for i in range(n):
            for j in range(t):
                for x, y, bw, bh in self.boxes(frames[i, j]):
                    masks[i, j, 0, max(0, y):y + bh, max(0, x):x + bw] = True
        return People(masks, None)


#: MediaPipe Pose landmark indices for each of JOINTS (midpoints for neck and pelvis). privbench's ``l_``/``r_`` are
#: the image's left and right for a person facing the camera (as synthetic-actions draws them), which are
#: MediaPipe's *right* and *left* body landmarks.
_MP = {"head": (0,), "neck": (11, 12), "pelvis": (23, 24), "l_shoulder": (12,), "l_elbow": (14,), "l_wrist": (16,),
       "r_shoulder": (11,), "r_elbow": (13,), "r_wrist": (15,), "l_hip": (24,), "l_knee": (26,), "l_ankle": (28,),
       "r_hip": (23,), "r_knee": (25,), "r_ankle": (27,)}


@ESTIMATORS.register("mediapipe")
class MediaPipe(PersonEstimator):
    """MediaPipe Pose with segmentation (offline: the 0.10.14 wheel bundles its .tflite models)."""

    def __init__(self) -> None:
        try:
            import warnings

            with warnings.catch_warnings():  # protobuf's deprecation notice on mediapipe's import
                warnings.simplefilter("ignore", UserWarning)
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
        kps = torch.full((n, t, 1, len(JOINTS), 2), float("nan"))
        for i in range(n):
            with mp_pose.Pose(static_image_mode=False, model_complexity=1, enable_segmentation=True) as est:
                for j in range(t):
                    res = est.process(np.ascontiguousarray(frames[i, j]))
                    if res.pose_landmarks is None:
                        continue
                    kps[i, j, 0] = _mp_joints(res.pose_landmarks.landmark, w, h)
                    if res.segmentation_mask is not None:
                        masks[i, j, 0] = torch.from_numpy(res.segmentation_mask > 0.5)
        return People(masks, kps)


def _mp_joints(landmarks, w: float, h: float, x0: float = 0.0, y0: float = 0.0, scale: float = 1.0) -> Tensor:
    """MediaPipe landmarks (normalised to their image) -> ``(J, 2)`` pixels of the full frame."""
    out = torch.empty(len(JOINTS), 2)
    for k, name in enumerate(JOINTS):
        pts = [(landmarks[m].x * w, landmarks[m].y * h) for m in _MP[name]]
        out[k] = torch.tensor(np.mean(pts, axis=0)) / scale + torch.tensor([x0, y0])
    return out


@ESTIMATORS.register("top-down")
class TopDown(PersonEstimator):
    """HOG person boxes, then MediaPipe Pose and segmentation inside each (upscaled) box; up to ``people`` per
    frame, largest boxes first."""

    def __init__(self, crop_height: int = 256, margin: float = 0.15, people: int = 8) -> None:
        MediaPipe()  # fails with the install command when mediapipe is missing
        self.hog, self.crop_height, self.margin, self.people = Hog(), crop_height, margin, people

    def estimate(self, clips: ImageSet) -> People:
        import cv2
        from mediapipe.python.solutions import pose as mp_pose

        frames = _frames_uint8(clips)
        n, t, h, w = frames.shape[:4]
        masks = torch.zeros(n, t, 1, h, w, dtype=torch.bool)
        kps = torch.full((n, t, self.people, len(JOINTS), 2), float("nan"))
        with mp_pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as est:
            for i in range(n):
                for j in range(t):
                    boxes = sorted(self.hog.boxes(frames[i, j]), key=lambda b: -b[2] * b[3])[: self.people]
                    for rank, (x, y, bw, bh) in enumerate(boxes):
                        mx, my = int(bw * self.margin), int(bh * self.margin)
                        x0, y0 = max(0, x - mx), max(0, y - my)
                        x1, y1 = min(w, x + bw + mx), min(h, y + bh + my)
                        crop = frames[i, j, y0:y1, x0:x1]
                        scale = self.crop_height / max(1, crop.shape[0])
                        big = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
                        res = est.process(np.ascontiguousarray(big))
                        if res.segmentation_mask is not None:
                            seg = cv2.resize(res.segmentation_mask, (x1 - x0, y1 - y0)) > 0.5
                            masks[i, j, 0, y0:y1, x0:x1] |= torch.from_numpy(seg)
                        else:  # no segmentation: the whole box
                            masks[i, j, 0, y0:y1, x0:x1] = True
                        if res.pose_landmarks is not None:
                            kps[i, j, rank] = _mp_joints(res.pose_landmarks.landmark, big.shape[1], big.shape[0], x0, y0,
                                                   scale)
        return People(masks, kps)


def estimator(name: str) -> PersonEstimator:
    """A fresh estimator by id (raises :class:`InputError` for an unknown id or a missing package)."""
    return ESTIMATORS.get(name)()
