"""Local video: read clips with PyAV, and the ``video-folder`` dataset (UCF101 / HMDB51 layout).

Nothing is downloaded. A missing or empty root raises :class:`InputError` naming it; a file that is not a video,
is corrupt or has too few frames is skipped; the skips are listed (``VideoFolder.skipped``) and reported in one
warning naming each file. Frames of any resolution are centre-cropped to a square and resized, so mixed resolutions load.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from privbench.core.errors import InputError
from privbench.core.registry import DATASETS
from privbench.data.core import Pool

#: File suffixes read as video (others in a class directory are skipped and listed).
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")
#: UCF101 names files ``v_<Action>_g<group>_c<clip>``; (action, group), one recording session, is the identity.
UCF_GROUP = r"_g(\d+)_"


def _square(frame: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return cv2.resize(frame[y:y + s, x:x + s], (size, size), interpolation=cv2.INTER_AREA)


def read_clip(path: Path, frames: int, size: int, step: int = 1, start: int = 0) -> np.ndarray:
    """Decode ``frames`` frames (every ``step``-th, from frame ``start``) of the video at ``path`` as
    ``(T, size, size, 3)`` uint8 RGB, centre-cropped to a square.

    Raises :class:`InputError` naming the file if it cannot be decoded or has too few frames.
    """
    import av

    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: has no video stream")
            for i, frame in enumerate(container.decode(video=0)):
                if i < start or (i - start) % step:
                    continue
                out.append(_square(frame.to_ndarray(format="rgb24"), size))
                if len(out) == frames:
                    break
    except InputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:  # av.error.InvalidDataError is an FFmpegError
        raise InputError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
    if len(out) < frames:
        raise InputError(f"{path}: {len(out)} decodable frames at step {step} from {start}; {frames} needed")
    return np.stack(out)


@dataclass
class VideoFolder:
    """A folder ``root/<action>/<video>`` read into clips; ``skipped`` lists ``(file, reason)``."""

    clips: np.ndarray
    labels: np.ndarray
    identities: Optional[np.ndarray]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_video_folder(root: Path, frames: int = 16, size: int = 64, step: int = 2,
                      identity_pattern: Optional[str] = UCF_GROUP) -> VideoFolder:
    """Read one clip per video file under ``root/<class>/``.

    ``identity_pattern``: a regular expression whose first group, found in the file name, names the recording
    group; the identity is (class, group), since UCF101 numbers groups per action. Every readable file must match
    it, else identities are left out. Files that fail to decode or are
    too short are skipped and listed; a class left without a readable clip raises :class:`InputError`.
    """
    if not root.is_dir():
        raise InputError(f"dataset 'video-folder': path {root} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"{root}: no class sub-directories (expected root/<action>/<video>)")
    clips, labels, names, skipped = [], [], [], []
    for label, cls in enumerate(classes):
        kept = 0
        for f in sorted((root / cls).iterdir()):
            if not f.is_file():
                continue
            if f.suffix.lower() not in VIDEO_SUFFIXES:
                skipped.append((str(f), f"not a video file suffix ({', '.join(VIDEO_SUFFIXES)})"))
                continue
            try:
                clips.append(read_clip(f, frames, size, step))
            except InputError as e:
                skipped.append((str(f), str(e)))
                continue
            labels.append(label)
            names.append(f.name)
            kept += 1
        if not kept:
            raise InputError(f"{root / cls}: no readable video with {frames} frames "
                             f"(skipped: {sum(s[0].startswith(str(root / cls)) for s in skipped)})")
    identities = None
    if identity_pattern:
        found = [re.search(identity_pattern, n) for n in names]
        if all(found):
            # UCF101 numbers its groups per action: g08 of one class is not g08 of another. The identity is the
            # (class, group) pair: a shared recording session, not a verified person.
            ids = [(classes[lab], m.group(1)) for lab, m in zip(labels, found) if m is not None]
            lookup = {k: i for i, k in enumerate(sorted(set(ids)))}
            identities = np.array([lookup[k] for k in ids], np.int64)
    return VideoFolder(np.stack(clips), np.array(labels, np.int64), identities, classes, skipped)


@DATASETS.register("video-folder")
def video_folder(options: Mapping[str, Any]) -> Pool:
    """Clips from a local ``root/<action>/<video>`` folder (UCF101/HMDB51 layout), read with PyAV; options:
    ``path``, ``frames`` (16), ``size`` (64), ``step`` (2), ``identity_pattern`` (UCF101's ``_g(\\d+)_``)."""
    if not options.get("path"):
        raise InputError("dataset 'video-folder': give dataset_options.video-folder.path (a local directory)")
    folder = read_video_folder(Path(str(options["path"])).expanduser(), int(options.get("frames", 16)),
                               int(options.get("size", 64)), int(options.get("step", 2)),
                               options.get("identity_pattern", UCF_GROUP))
    if folder.skipped:
        warnings.warn(f"video-folder: skipped {len(folder.skipped)} file(s): "
                      + "; ".join(f"{f}: {why}" for f, why in folder.skipped), stacklevel=2)
    x = torch.from_numpy(folder.clips).permute(0, 1, 4, 2, 3).float().div_(255.0)
    ids = None if folder.identities is None else torch.from_numpy(folder.identities)
    return Pool(x, torch.from_numpy(folder.labels), len(folder.classes), identities=ids)
