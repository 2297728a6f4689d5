"""Entropy coding: exact round trip, bytes that follow the bottleneck and the bit depth, clear errors."""

from __future__ import annotations

import pytest
import torch

from privbench.core.errors import InputError
from privbench.ops.coding import FactorizedCoder, FeatureCodec, UniformQuantizer


def _features(c: int = 8, n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 2.0, c).view(1, c, 1, 1)
    return torch.randn(n, c, 7, 7, generator=g) * scale


def test_round_trip_is_exact() -> None:
    feats = _features()
    codec = FeatureCodec.fit(feats, bits=8)
    symbols = codec.quantizer.quantize(feats)
    payloads = codec.encode_batch(feats)
    decoded = torch.stack([codec.coder.decode(p, tuple(symbols.shape[1:])) for p in payloads])
    assert torch.equal(decoded, symbols)
    recon = codec.decode_batch(payloads, tuple(symbols.shape[1:]))
    step = (codec.quantizer.hi - codec.quantizer.lo).view(1, -1, 1, 1) / 255
    assert torch.all((recon - feats).abs() <= step / 2 + 1e-5)


def test_bytes_shrink_with_narrower_bottleneck_and_fewer_bits() -> None:
    feats = _features(c=16)
    sizes = {}
    for c in (16, 4):
        for bits in (8, 4, 2):
            codec = FeatureCodec.fit(feats[:, :c], bits)
            sizes[(c, bits)] = sum(len(p) for p in codec.encode_batch(feats[:, :c]))
    assert sizes[(4, 8)] < sizes[(16, 8)] and sizes[(4, 2)] < sizes[(16, 2)]
    assert sizes[(16, 2)] < sizes[(16, 4)] < sizes[(16, 8)]


def test_coded_size_is_close_to_the_empirical_entropy() -> None:
    feats = _features(c=4, n=200)
    codec = FeatureCodec.fit(feats, 6)
    symbols = codec.quantizer.quantize(feats)
    pmf = torch.from_numpy(codec.coder.pmf)
    info = -torch.log2(pmf.gather(1, symbols.transpose(0, 1).reshape(4, -1))).sum()
    coded_bits = 8 * sum(len(p) for p in codec.encode_batch(feats))
    assert 0.99 * info <= coded_bits <= info * 1.05 + 200 * 64  # ANS overhead: < one 32-bit word per payload


def test_bad_bits_and_shapes() -> None:
    with pytest.raises(InputError, match=r"bits must be an integer in \[1, 16\], got 0"):
        UniformQuantizer.fit(_features(), 0)
    codec = FeatureCodec.fit(_features(c=8), 4)
    with pytest.raises(InputError, match="fitted on 8"):
        codec.coder.encode(torch.zeros(3, 7, 7, dtype=torch.int64))
    with pytest.raises(InputError, match="positive"):
        FactorizedCoder(torch.zeros(2, 4).numpy())
