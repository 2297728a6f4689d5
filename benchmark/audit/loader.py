"""Safe reading of the image folders an audit compares (docs/AUDIT.md, "Input").

Every file under a directory (recursively, sorted) with an image extension is decoded with Pillow, nothing else:
nothing is unpickled, no plugin runs. A file that cannot be read is *skipped* with its reason, never a crash:
zero-byte files, non-images with an image extension, corrupt or truncated data, decompression bombs (more than
``max_pixels`` pixels, checked from the header before decoding), symlinks that leave the directory, unreadable
files. Video files (``.mp4``, ``.avi``, ...) contribute ``frames`` frames each, decoded with PyAV from a container
identified by its first bytes (:func:`sniff_container`: MP4/QuickTime, Matroska/WebM or AVI, never a script such as
ffconcat or a playlist that names other files), through the ``file`` protocol only, with frames over ``max_pixels``
refused from the header and by the decoder itself. The walk (:func:`scan`) never follows a directory symlink;
symlinks that leave the directory, loop or dangle, and hidden files and directories, are skipped with their reason.

Normalisation rule (documented in docs/AUDIT.md): EXIF orientation applied; palette, grey, CMYK, 16-bit and alpha
images converted to 8-bit RGB (alpha composited over white); the shorter side resized to ``size`` with Pillow's
area-averaging ``reduce``/``BOX`` filter and the centre cropped to ``size`` × ``size``. Mixed sizes and modes are
therefore comparable; the original size and mode of each file are kept for the report.
"""

from __future__ import annotations

import errno
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Optional

import numpy as np

from privbench.core.errors import InputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
#: Largest image decoded (pixels): 64 MP, well above any camera frame, far below a decompression bomb.
MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 512 << 20
#: QuickTime/MP4 top-level atoms a file may start with (``ftyp`` in every MP4; older QuickTime files may open with
#: one of the others).
_QUICKTIME_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
#: The only FFmpeg demuxers the audit uses, with their options: QuickTime's external data references (``dref``,
#: the one way these demuxers load another file) stay off. ffconcat, HLS/DASH playlists and image2 are never used.
VIDEO_CONTAINERS = MappingProxyType({"mov": (("enable_drefs", "0"), ("use_absolute_path", "0")), "matroska": (),
                                     "avi": ()})


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
    sampled frame); ``info``: the original ``WxH mode`` of each; ``skipped``: what could not be read, and why;
    ``sources``: the checked real path of each image file (``None`` for a video frame).
    """

    root: Path
    images: np.ndarray
    names: list[str]
    info: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    sources: list[Optional[Path]] = field(default_factory=list)

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


def sniff_container(head: bytes) -> Optional[str]:
    """The FFmpeg demuxer for a file starting with ``head`` (its first 12 bytes or more): ``"mov"`` (MP4/QuickTime),
    ``"matroska"`` (Matroska/WebM, EBML magic ``1A 45 DF A3``), ``"avi"`` (``RIFF....AVI ``); ``None`` for anything
    else, such as an ffconcat script or a playlist."""
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def read_video(path: Path, size: int, frames: int, max_pixels: int = MAX_PIXELS) -> tuple[list[np.ndarray], str]:
    """The first ``frames`` frames of the video at ``path``, normalised like images (:func:`normalise`), and its
    ``"WxH video"`` description. The demuxer is chosen from the file's first bytes and forced (never probed), only
    the ``file`` protocol is allowed, and frames over ``max_pixels`` are refused from the stream header and by the
    decoder (FFmpeg's ``max_pixels``, also while the streams are probed). Raises :class:`Unreadable` with the
    reason for anything else."""
    import av

    with open(path, "rb") as f:
        head = f.read(12)
    fmt = sniff_container(head)
    if fmt is None:
        raise Unreadable(f"not an MP4/QuickTime, Matroska/WebM or AVI container (starts with {head[:8]!r}); other "
                         "formats, such as ffconcat scripts and playlists, are refused")
    limit = str(max_pixels)
    w = h = 0
    out: list[np.ndarray] = []
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # FFmpeg's last error line goes into the reason; Capture keeps it quiet
    try:
        with av.logging.Capture():
            # options reach the demuxer and the decoders that probe each stream; container_options the demuxer only
            with av.open(str(path), format=fmt, options={"max_pixels": limit},
                         container_options={"protocol_whitelist": "file", **dict(VIDEO_CONTAINERS[fmt])}) as container:
                if container.format.name not in VIDEO_CONTAINERS:
                    raise Unreadable(f"opened as {container.format.name!r}, not {', '.join(VIDEO_CONTAINERS)}")
                if not container.streams.video:
                    raise Unreadable("has no video stream")
                stream = container.streams.video[0]
                cc = stream.codec_context
                w, h = cc.width, cc.height
                if w * h > max_pixels:
                    raise Unreadable(_too_big(w, h, max_pixels))
                cc.options = {**cc.options, "max_pixels": limit}  # also refuses a frame size changing mid-stream
                for frame in container.decode(stream):
                    if frame.width * frame.height > max_pixels:
                        raise Unreadable(_too_big(frame.width, frame.height, max_pixels))
                    w, h = frame.width, frame.height
                    out.append(normalise(frame.to_image(), size))
                    if len(out) == frames:
                        break
    except Unreadable:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV raises many types on hostile data; each is a skip reason
        log = getattr(e, "log", None)  # FFmpeg's last error line, e.g. a frame size the probe had to decode to learn
        detail = log[2].strip() if isinstance(log, tuple) and len(log) == 3 else ""
        m = re.search(r"Picture size (\d+)x(\d+) exceeds specified max pixel count (\d+)", detail)
        if m and int(m.group(3)) == max_pixels:
            raise Unreadable(_too_big(int(m.group(1)), int(m.group(2)), max_pixels) + ", refused by the decoder"
                             ) from None
        text = str(e).split("; last error log")[0][:120] + (f"; FFmpeg: {detail[:120]}" if detail else "")
        raise Unreadable(f"not a readable video ({type(e).__name__}: {text})") from None
    finally:
        av.logging.set_level(level)
    if len(out) < frames:
        raise Unreadable(f"{len(out)} decodable frames; {frames} needed")
    return out, f"{w}x{h} video"


def _too_big(w: int, h: int, max_pixels: int) -> str:
    return f"video frames of {w}x{h} = {w * h} pixels exceed the limit of {max_pixels} (a decompression bomb?)"


def _resolve(path: Path) -> Path:
    """``path`` with every symlink resolved; :class:`Unreadable` for a symlink loop or a missing target."""
    try:
        return path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop as RuntimeError("Symlink loop from ...")
        raise Unreadable("symlink loop") from None
    except FileNotFoundError:
        raise Unreadable("dangling symlink (its target does not exist)" if path.is_symlink()
                         else "does not exist (removed while reading?)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Unreadable("symlink loop") from None
        raise


def _inside(path: Path, base: Path, root: Path) -> Path:
    """The real path of ``path``, checked to lie under ``base`` (the resolved ``root``) and to be a regular file."""
    real = _resolve(path)
    if not real.is_relative_to(base):
        raise Unreadable(f"symlink pointing outside {root} ({real})")
    if not real.is_file():
        raise Unreadable("not a regular file")
    return real


def scan(root: Path) -> tuple[list[Path], list[Skipped]]:
    """Candidate files under ``root`` (recursively, sorted, depth first) and the entries skipped while walking, with
    their reasons: hidden files and directories (not descended into), directory symlinks (never followed: out of
    ``root``, back to an ancestor, or elsewhere inside), symlink loops, dangling symlinks, directories that cannot
    be listed. The walk keeps its own stack, so no nesting depth exhausts Python's recursion limit."""
    base = root.resolve()
    files: list[Path] = []
    skipped: list[Skipped] = []
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            rel = Path(d).relative_to(root).as_posix()
            skipped.append(Skipped(rel, f"cannot list directory ({e.strerror or type(e).__name__})"))
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.name.startswith("."):
                    raise Unreadable("hidden; not audited" + (" (nor anything under it)"
                                                              if entry.is_dir(follow_symlinks=False) else ""))
                if entry.is_symlink():
                    real = _resolve(path)
                    if real.is_dir():
                        if not real.is_relative_to(base):
                            raise Unreadable(f"directory symlink pointing outside {root} ({real}); not followed")
                        if path.parent.resolve().is_relative_to(real):
                            raise Unreadable("symlink loop (a directory symlink to its own ancestor); not followed")
                        raise Unreadable("directory symlink inside the release; not followed (its files are read "
                                         "where they lie)")
                    files.append(path)
                elif entry.is_dir(follow_symlinks=False):
                    subdirs.append(path)
                else:
                    files.append(path)
            except Unreadable as e:
                skipped.append(Skipped(path.relative_to(root).as_posix(), str(e)))
            except OSError as e:
                skipped.append(Skipped(path.relative_to(root).as_posix(),
                                       f"cannot read ({e.strerror or type(e).__name__})"))
        stack.extend(reversed(subdirs))
    return files, skipped


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
    images, names, info, sources = [], [], [], []
    candidates, skipped = scan(root)
    kinds = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    files = [p for p in candidates if p.suffix.lower() in kinds]
    skipped += [Skipped(p.relative_to(root).as_posix(), f"not an image or video extension ({p.suffix or 'none'})")
                for p in candidates if p.suffix.lower() not in kinds]
    for path in tqdm(files, desc=f"reading {what}", unit="file", disable=not progress, dynamic_ncols=True):
        rel = path.relative_to(root).as_posix()
        try:
            real = _inside(path, base, root)
            st = real.stat()
            if st.st_size > MAX_FILE_BYTES:
                raise Unreadable(f"{st.st_size} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                clip, desc = read_video(real, size, frames, max_pixels)
                images += clip
                names += [f"{rel}#{i}" for i in range(len(clip))]
                info += [desc] * len(clip)
                sources += [None] * len(clip)
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
        sources.append(real)
    if not images:
        detail = f"; {len(skipped)} skipped, e.g. {skipped[0].path!r}: {skipped[0].reason!r}" if skipped else ""
        raise InputError(f"{what} directory {root} holds no readable image or video file{detail}")
    return Folder(root, np.stack(images), names, info, skipped, sources)


def detection_view(folder: Folder, index: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image ``index`` of ``folder`` re-read whole for the detectors (video frames: the normalised frame). The file
    is checked again to lie inside the folder; if it no longer reads, the normalised image is used."""
    source = folder.sources[index] if index < len(folder.sources) else None
    if source is None:
        return folder.images[index]
    try:
        real = _inside(source, Path(folder.root).resolve(), folder.root)
        return load_image_bytes(real.read_bytes(), 0, max_pixels, detect=True)[0]
    except (Unreadable, OSError):
        return folder.images[index]
