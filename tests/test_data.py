"""Embedded datasets, seeded disjoint splits, and local-format loaders on fixtures written in their formats."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from privbench.core.errors import InputError
from privbench.core.specs import SplitConfig
from privbench.data import load_splits


@pytest.mark.parametrize("name,shape,classes", [("mnist5k", (1, 28, 28), 10), ("digits", (1, 8, 8), 10),
                                                ("faces", (1, 32, 32), 2), ("photo-patches", (3, 32, 32), 8)])
def test_embedded_datasets_load_offline(name: str, shape, classes: int) -> None:
    s = load_splits(name, SplitConfig(private=100, aux=50, test=50, targets=10), 0)
    assert s.info.shape == shape and s.info.num_classes == classes
    assert s.private.images.min() >= 0 and s.private.images.max() <= 1
    assert s.private.images.std() > 0.05  # real images, not blanks
    assert len(s.targets) == 10


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in (x * 255).round().to(torch.uint8)}


def test_splits_are_disjoint_seeded_and_hashed() -> None:
    cfg = SplitConfig(private=600, aux=600, test=400, targets=50)
    a, b, c = load_splits("digits", cfg, 0), load_splits("digits", cfg, 0), load_splits("digits", cfg, 1)
    assert a.info.split_hashes == b.info.split_hashes and torch.equal(a.private.images, b.private.images)
    assert a.info.split_hashes != c.info.split_hashes
    assert a.info.hash == c.info.hash  # same pool
    # digits contains a few exact duplicate images; allow for them, but splits are index-disjoint.
    p, x, t = _rows(a.private.images), _rows(a.aux.images), _rows(a.test.images)
    assert len(p & x) <= 5 and len(p & t) <= 5
    assert a.info.sizes == {"private": 600, "aux": 600, "test": 400, "targets": 50}


def test_a_split_larger_than_the_dataset_is_an_error_unless_scale_fit() -> None:
    with pytest.raises(InputError, match=r"dataset 'digits' has 1797 images for splits.private \(30000\)"):
        load_splits("digits", SplitConfig(private=30000, aux=100, test=100, targets=10), 0)
    with pytest.raises(InputError, match=r"splits.targets \(200\) exceeds the private split \(100 images\)"):
        load_splits("digits", SplitConfig(private=100, aux=100, test=100, targets=200), 0)
    with pytest.raises(InputError, match="scale must be 'exact' or 'fit'"):
        SplitConfig(scale="shrink")
    s = load_splits("faces", SplitConfig(private=1000, aux=1000, test=1000, targets=100, scale="fit"), 0)
    assert sum(s.info.sizes[k] for k in ("private", "aux", "test")) <= 203
    assert s.info.sizes["targets"] == len(s.targets) <= s.info.sizes["private"]


def _write_idx(path, arr: np.ndarray, compress: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    blob = header + arr.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)


def test_idx_loader_reads_fashion_mnist_layout(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress=True)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    s = load_splits("fashion-mnist", SplitConfig(private=20, aux=20, test=10, targets=5), 0,
                    {"path": str(tmp_path)})
    assert s.info.shape == (1, 28, 28) and s.info.sizes["test"] == 10
    # test images come from the t10k file only
    t10k = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    t10k = torch.from_numpy(np.frombuffer(t10k, np.uint8).reshape(20, 28, 28).astype(np.float32) / 255)
    assert _rows(s.test.images[:, 0]) <= _rows(t10k)


def test_idx_loader_rejects_bad_files(tmp_path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(InputError, match="train-images-idx3-ubyte: not an IDX file"):
        load_splits("mnist", SplitConfig(), 0, {"path": str(tmp_path)})


def test_cifar10_binary_loader(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        recs = np.concatenate([rng.integers(0, 10, (8, 1)), rng.integers(0, 256, (8, 3072))], 1)
        recs.astype(np.uint8).tofile(tmp_path / name)
    s = load_splits("cifar10", SplitConfig(private=10, aux=10, test=8, targets=4), 0, {"path": str(tmp_path)})
    assert s.info.shape == (3, 32, 32) and s.info.sizes["test"] == 8
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="test_batch.bin: size 100 is not a multiple"):
        load_splits("cifar10", SplitConfig(), 0, {"path": str(tmp_path)})


def test_cifar10_pickle_version_is_refused(tmp_path) -> None:
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x04pickle")
    with pytest.raises(InputError, match="refuses to unpickle"):
        load_splits("cifar10", SplitConfig(), 0, {"path": str(tmp_path)})


def _image_tree(root, n: int = 6) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_imagefolder_loads_and_rejects_corrupt_images(tmp_path) -> None:
    _image_tree(tmp_path)
    s = load_splits("imagefolder", SplitConfig(private=4, aux=4, test=4, targets=2), 0,
                    {"path": str(tmp_path), "size": 16})
    assert s.info.shape == (3, 16, 16) and s.info.num_classes == 2
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match=r"broken\.png: corrupt or unreadable image"):
        load_splits("imagefolder", SplitConfig(), 0, {"path": str(tmp_path)})


def test_missing_and_empty_paths(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_splits("imagefolder", SplitConfig(), 0, {"path": str(tmp_path / "nope")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is empty"):
        load_splits("imagefolder", SplitConfig(), 0, {"path": str(tmp_path / "empty")})
    with pytest.raises(InputError, match="dataset_options.mnist.path"):
        load_splits("mnist", SplitConfig(), 0, {})
