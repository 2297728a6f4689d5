"""Real entropy coding of feature tensors: uniform scalar quantisation + a factorized per-channel ANS coder.

Used wherever a release is a representation that leaves the defender as bytes (the ``bitstream`` surface): the
split-DNN autoencoder's bottleneck and, for comparison, the undefended model's raw split features. Bytes are real
(constriction's asymmetric numeral systems coder, Bamler 2022), never an entropy estimate.

The quantiser's per-channel range and the coder's per-channel probability tables are fitted once on training
features and shared by encoder and decoder (like the learned entropy model of a neural codec); they are not counted
per image. The decoder reproduces the quantised symbols exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from privbench.core.errors import InputError

MAX_BITS = 16


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise InputError(f"quantisation bits must be an integer in [1, {MAX_BITS}], got {bits!r}")


@dataclass(frozen=True)
class UniformQuantizer:
    """Per-channel uniform quantiser to ``2**bits`` levels over ``[lo, hi]`` (fitted on training features).

    ``quantize``: ``(N, C, ...)`` float -> int64 symbols in ``[0, 2**bits - 1]``; ``dequantize`` inverts it up to the
    step ``(hi - lo) / (2**bits - 1)``. Values outside the fitted range are clipped.
    """

    bits: int
    lo: Tensor  # (C,)
    hi: Tensor  # (C,)

    @staticmethod
    def fit(features: Tensor, bits: int) -> "UniformQuantizer":
        _check_bits(bits)
        if features.ndim < 2 or not torch.isfinite(features).all():
            raise InputError(f"features to fit a quantiser must be finite (N, C, ...), got {tuple(features.shape)}")
        flat = features.detach().transpose(0, 1).reshape(features.shape[1], -1).float()
        lo, hi = flat.min(1).values, flat.max(1).values
        return UniformQuantizer(bits, lo, torch.maximum(hi, lo + 1e-6))

    @property
    def levels(self) -> int:
        return 2 ** self.bits

    def _shape(self, x: Tensor) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.ndim - 2)

    def quantize(self, x: Tensor) -> Tensor:
        lo, hi = self.lo.view(self._shape(x)).to(x.device), self.hi.view(self._shape(x)).to(x.device)
        q = torch.round((x.float() - lo) / (hi - lo) * (self.levels - 1))
        return q.clamp(0, self.levels - 1).long()

    def dequantize(self, q: Tensor) -> Tensor:
        lo, hi = self.lo.view(self._shape(q)).to(q.device), self.hi.view(self._shape(q)).to(q.device)
        return lo + q.float() / (self.levels - 1) * (hi - lo)


class FactorizedCoder:
    """ANS coder with one fitted categorical distribution per channel (add-one smoothed counts).

    ``encode(symbols (C, ...))`` -> bytes; ``decode(bytes, shape)`` -> the same symbols.
    """

    def __init__(self, pmf: np.ndarray) -> None:
        if pmf.ndim != 2 or not np.all(np.isfinite(pmf)) or np.any(pmf <= 0):
            raise InputError("pmf must be a positive (C, levels) table")
        self.pmf = (pmf / pmf.sum(1, keepdims=True)).astype(np.float64)

    @staticmethod
    def fit(symbols: Tensor, levels: int) -> "FactorizedCoder":
        """Fit per-channel probabilities on training symbols ``(N, C, ...)``."""
        c = symbols.shape[1]
        flat = symbols.transpose(0, 1).reshape(c, -1)
        counts = torch.stack([torch.bincount(flat[i], minlength=levels)[:levels] for i in range(c)])
        return FactorizedCoder(counts.double().numpy() + 1.0)

    def _probs(self, shape: tuple[int, ...]) -> np.ndarray:
        c, per = shape[0], int(np.prod(shape[1:], dtype=np.int64))
        if c != self.pmf.shape[0]:
            raise InputError(f"symbols have {c} channels, the coder was fitted on {self.pmf.shape[0]}")
        return np.repeat(self.pmf, per, axis=0)  # (C·per, levels), channel-major like symbols.reshape(-1)

    def encode(self, symbols: Tensor) -> bytes:
        import constriction

        probs = self._probs(tuple(symbols.shape))
        data = symbols.reshape(-1).numpy().astype(np.int32)
        if data.size and (data.min() < 0 or data.max() >= self.pmf.shape[1]):
            raise InputError(f"symbols outside [0, {self.pmf.shape[1] - 1}]")
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(data, constriction.stream.model.Categorical(perfect=False), probs)
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, shape: tuple[int, ...]) -> Tensor:
        import constriction

        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        coder = constriction.stream.stack.AnsCoder(words)
        out = coder.decode(constriction.stream.model.Categorical(perfect=False), self._probs(shape))
        return torch.from_numpy(np.asarray(out, dtype=np.int64)).view(shape)


@dataclass
class FeatureCodec:
    """Quantiser + coder for ``(C, h, w)`` feature maps; ``encode_batch`` gives one payload per sample."""

    quantizer: UniformQuantizer
    coder: FactorizedCoder

    @staticmethod
    def fit(features: Tensor, bits: int) -> "FeatureCodec":
        q = UniformQuantizer.fit(features, bits)
        return FeatureCodec(q, FactorizedCoder.fit(q.quantize(features), q.levels))

    def encode_batch(self, features: Tensor) -> list[bytes]:
        symbols = self.quantizer.quantize(features.detach().cpu())
        return [self.coder.encode(s) for s in symbols]

    def decode_batch(self, payloads: list[bytes], shape: tuple[int, ...]) -> Tensor:
        """Dequantised features ``(N, *shape)``."""
        symbols = torch.stack([self.coder.decode(p, shape) for p in payloads])
        return self.quantizer.dequantize(symbols)
