"""Safe reading of the image folders an audit compares (docs/AUDIT.md, "Input").

Every file under a directory (recursively, sorted) with an image extension is decoded with Pillow, nothing else:
nothing is unpickled, no plugin runs. A file that cannot be read is *skipped* with its reason, never a crash:
zero-byte files, non-images with an image extension, corrupt or truncated data, decompression bombs (more than
``max_pixels`` pixels, checked from the header before decoding), symlinks that leave the directory, unreadable
files. Video files (``.mp4``, ``.avi``, ...) contribute ``frames`` frames each, decoded with PyAV.

Normalisation rule (documented in docs/AUDIT.md): EXIF orientation applied; palette, grey, CMYK, 16-bit and alpha
images converted to 8-bit RGB (alpha composited over white); the shorter side resized to ``size`` with Pillow's
area-averaging ``reduce``/``BOX`` filter and the centre cropped to ``size`` × ``size``. Mixed sizes and modes are
therefore comparable; the original size and mode of each file are kept for the report.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
#: Largest image decoded (pixels): 64 MP, well above any camera frame, far below a decompression bomb.
MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 512 << 20


class Unreadable(Exception):
    """A file the loader skips; the message is the reason shown in the report."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Folder:
    """Images of one directory after normalisation.

    ``images``: ``(N, size, size, 3)`` uint8 RGB; ``names``: relative paths (``clip.mp4#3`` for a video's 4th
    sampled frame); ``info``: the original ``WxH mode`` of each; ``skipped``: what could not be read, and why.
    """

    root: Path
    images: np.ndarray
    names: list[str]
    info: list[str]
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def _to_rgb(img: "PIL.Image.Image") -> "PIL.Image.Image":  # noqa: F821 - Pillow is imported lazily
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: the top 8 bits, as an 8-bit export would be
        arr = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        img = Image.fromarray(((arr - lo) / ((hi - lo) or 1.0) * 255).round().astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def normalise(img: "PIL.Image.Image", size: int) -> np.ndarray:  # noqa: F821
    """The rule above, on a decoded Pillow image: ``(size, size, 3)`` uint8 RGB. The centre square is cut in the
    source's coordinates and only it is resized, so a 1 × 10⁶ strip costs no more memory than a small image."""
    from PIL import Image

    img = _to_rgb(img)
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box = (left, top, left + side, top + side)
    resample = Image.Resampling.BOX if side > size else Image.Resampling.BICUBIC
    return np.asarray(img.resize((size, size), resample, box=box), dtype=np.uint8)


def for_detection(img: "PIL.Image.Image", longest: int = 512) -> np.ndarray:  # noqa: F821
    """The whole image (not the centre square) as RGB uint8 with its long side at most ``longest``: what the face
    and people detectors see."""
    from PIL import Image

    img = _to_rgb(img)
    w, h = img.size
    scale = min(1.0, longest / max(w, h))
    if scale < 1:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8)


#: The only Pillow decoders the audit uses (Pillow's others include EPS, which would run Ghostscript on the input).
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")


def load_image_bytes(data: bytes, size: int, max_pixels: int = MAX_PIXELS, detect: bool = False
                     ) -> tuple[np.ndarray, str]:
    """Decode one image file's bytes: ``(normalised (size, size, 3) uint8, "WxH mode")`` (``detect``: the whole
    image for the detectors, :func:`for_detection`). Raises :class:`Unreadable` with the reason for anything else
    (the fuzz test feeds it arbitrary bytes)."""
    from PIL import Image

    if not data:
        raise Unreadable("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about corrupt metadata it can read past
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = img.size
            if w < 1 or h < 1:
                raise Unreadable(f"degenerate size {w}x{h}")
            if w * h > max_pixels:
                raise Unreadable(f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} (a decompression bomb?)")
            mode = img.mode
            img.load()
            return (for_detection(img) if detect else normalise(img, size)), f"{w}x{h} {mode}"
        except Unreadable:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise Unreadable(f"decompression bomb refused ({e})") from None
        except Exception as e:  # noqa: BLE001 - Pillow raises many types on hostile data; each is a skip reason
            raise Unreadable(f"not a readable image ({type(e).__name__}: {str(e)[:120]})") from None


def _video_frames(path: Path, size: int, frames: int) -> Iterator[tuple[np.ndarray, str, str]]:
    from ..data.video import read_clip

    try:
        clip = read_clip(path, frames, size, step=1)
    except InputError as e:
        raise Unreadable(str(e)) from None
    except Exception as e:  # noqa: BLE001 - PyAV raises many types on hostile data
        raise Unreadable(f"not a readable video ({type(e).__name__}: {str(e)[:120]})") from None
    for i, frame in enumerate(clip):
        yield frame, f"#{i}", "video frame"


def iter_files(root: Path) -> Iterator[Path]:
    """Candidate files under ``root`` (recursively, sorted; hidden files and directories skipped)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def read_folder(root: Path, size: int = 64, frames: int = 8, max_pixels: int = MAX_PIXELS,
                progress: bool = False, what: str = "images") -> Folder:
    """Read every image (and video) file under ``root``; see the module docstring for the rules.

    Raises :class:`InputError` when ``root`` is missing, not a directory, or holds no readable file."""
    from tqdm import tqdm

    root = Path(root)
    if not root.exists():
        raise InputError(f"{what} directory {root} does not exist")
    if not root.is_dir():
        raise InputError(f"{what} path {root} is not a directory")
    base = root.resolve()
    images, names, info, skipped = [], [], [], []
    candidates = list(iter_files(root))
    files = [p for p in candidates if p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS]
    skipped += [Skipped(p.relative_to(root).as_posix(), f"not an image or video extension ({p.suffix or 'none'})")
                for p in candidates if p.suffix.lower() not in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS]
    for path in tqdm(files, desc=f"reading {what}", unit="file", disable=not progress, dynamic_ncols=True):
        rel = path.relative_to(root).as_posix()
        try:
            real = path.resolve()
            if not real.is_relative_to(base):
                raise Unreadable(f"symlink pointing outside {root} ({real})")
            if not real.is_file():
                raise Unreadable("not a regular file")
            st = real.stat()
            if st.st_size > MAX_FILE_BYTES:
                raise Unreadable(f"{st.st_size} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                for frame, suffix, kind in _video_frames(real, size, frames):
                    images.append(frame)
                    names.append(rel + suffix)
                    info.append(kind)
                continue
            array, desc = load_image_bytes(real.read_bytes(), size, max_pixels)
        except Unreadable as e:
            skipped.append(Skipped(rel, str(e)))
            continue
        except OSError as e:
            skipped.append(Skipped(rel, f"cannot read ({e.strerror or type(e).__name__})"))
            continue
        images.append(array)
        names.append(rel)
        info.append(desc)
    if not images:
        detail = f"; {len(skipped)} skipped, e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
        raise InputError(f"{what} directory {root} holds no readable image or video file{detail}")
    return Folder(root, np.stack(images), names, info, skipped)


def detection_view(folder: Folder, index: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image ``index`` of ``folder`` re-read whole for the detectors (video frames: the normalised frame)."""
    name = folder.names[index]
    if "#" in name:
        return folder.images[index]
    try:
        return load_image_bytes((folder.root / name).read_bytes(), 0, max_pixels, detect=True)[0]
    except (Unreadable, OSError):
        return folder.images[index]
