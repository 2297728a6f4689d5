"""Loaders for datasets on local disk: MNIST/Fashion-MNIST IDX files, CIFAR-10 binary, ImageFolder trees.

Nothing is downloaded. A missing path, an empty directory or a corrupt file raises :class:`InputError` naming it.
The pickled "python version" of CIFAR-10 is refused: privbench never unpickles data.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from privbench.core.errors import InputError
from privbench.core.registry import DATASETS
from privbench.data.core import Pool

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped), as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read IDX file: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise InputError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise InputError(f"{path}: IDX payload has {len(data) - header} bytes, header says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for cand in (root / stem, root / f"{stem}.gz"):
        if cand.is_file():
            return cand
    raise InputError(f"{root}: missing IDX file {stem}[.gz]")


def _require_dir(options: Mapping[str, Any], default: str | None, dataset: str) -> Path:
    raw = options.get("path", default)
    if raw is None:
        raise InputError(f"dataset {dataset!r}: give dataset_options.{dataset}.path (a local directory)")
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise InputError(f"dataset {dataset!r}: path {root} does not exist or is not a directory")
    if not any(root.iterdir()):
        raise InputError(f"dataset {dataset!r}: directory {root} is empty")
    return root


def load_idx_pool(root: Path) -> Pool:
    """``train-*`` and ``t10k-*`` IDX files under ``root``; t10k becomes the fixed test split."""
    parts = []
    for prefix in ("train", "t10k"):
        x = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise InputError(f"{root}: {prefix} images {x.shape} and labels {y.shape} do not match")
        parts.append((x, y))
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    fixed = torch.zeros(len(x), dtype=torch.bool)
    fixed[len(parts[0][0]):] = True
    return Pool(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y), int(y.max()) + 1, fixed)


@DATASETS.register("fashion-mnist")
def fashion_mnist(options: Mapping[str, Any]) -> Pool:
    """Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist`` installs them in the default path)."""
    return load_idx_pool(_require_dir(options, "/usr/share/datasets/fashion-mnist", "fashion-mnist"))


@DATASETS.register("mnist")
def mnist(options: Mapping[str, Any]) -> Pool:
    """Full MNIST from local IDX files (``dataset_options.mnist.path``)."""
    return load_idx_pool(_require_dir(options, None, "mnist"))


@DATASETS.register("cifar10")
def cifar10(options: Mapping[str, Any]) -> Pool:
    """CIFAR-10 *binary* version: ``data_batch_1..5.bin`` and ``test_batch.bin`` (3×32×32, 10 classes)."""
    root = _require_dir(options, None, "cifar10")
    if (root / "data_batch_1").exists() and not (root / "data_batch_1.bin").exists():
        raise InputError(f"{root}: this is the pickled 'python version' of CIFAR-10, which privbench refuses to "
                         "unpickle; download the binary version (cifar-10-binary.tar.gz)")
    record = 1 + 3 * 32 * 32
    xs, ys, is_test = [], [], []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        path = root / name
        if not path.is_file():
            raise InputError(f"{root}: missing CIFAR-10 binary file {name}")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise InputError(f"{path}: size {raw.size} is not a multiple of the {record}-byte CIFAR-10 record")
        raw = raw.reshape(-1, record)
        if raw[:, 0].max() > 9:
            raise InputError(f"{path}: label byte > 9; not a CIFAR-10 binary file")
        ys.append(raw[:, 0].astype(np.int64))
        xs.append(raw[:, 1:].reshape(-1, 3, 32, 32))
        is_test.append(np.full(len(raw), name == "test_batch.bin"))
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
    return Pool(x, torch.from_numpy(np.concatenate(ys)), 10, torch.from_numpy(np.concatenate(is_test)))


_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@DATASETS.register("imagefolder")
def imagefolder(options: Mapping[str, Any]) -> Pool:
    """An ImageFolder tree ``root/<class>/<image>``; options: ``path``, ``size`` (default 32), ``grey``."""
    from PIL import Image, UnidentifiedImageError

    root = _require_dir(options, None, "imagefolder")
    size = int(options.get("size", 32))
    mode = "L" if options.get("grey", False) else "RGB"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"{root}: no class sub-directories (expected root/<class>/<image>)")
    imgs, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in _IMAGE_EXT)
        if not files:
            raise InputError(f"{root / cls}: class directory has no images")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert(mode).resize((size, size), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                raise InputError(f"{f}: corrupt or unreadable image ({e})") from None
            imgs.append(arr if arr.ndim == 3 else arr[..., None])
            labels.append(label)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return Pool(x, torch.tensor(labels, dtype=torch.int64), len(classes))
