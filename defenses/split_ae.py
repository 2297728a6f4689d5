"""Split-DNN privacy autoencoder with adversarial training and real coded bitrate (Azizian & Bajić,
"Privacy-Preserving Feature Coding for Machines", PCS 2022, arXiv 2210.00727; IEEE TIP 2024, arXiv 2402.18864).

A task model is split at a named point; an autoencoder is inserted at the split: the encoder (3×3 convolutions with
SiLU and a residual block, ending in a narrow bottleneck without activation) runs on the device, its quantised
bottleneck is entropy-coded and sent, and the decoder (mirrored) feeds the rest of the task model. Training:
1. train the task model; 2. pretrain the autoencoder with the task model frozen; 3. alternate per batch one step of
an adversary "RecNet" (transposed convolutions) reconstructing the input from the bottleneck with
``L_rec = L1(x, x̂) + β·L1(Sobel(Y), Sobel(Ŷ))`` on luma ``Y``, and one defender step on
``L_task − w_rec·L_rec``. ``w_rec = 0`` is the plain-autoencoder baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import Defense, RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import Splits, Surface
from privbench.core.registry import DEFENSES
from privbench.core.release import Bitstream, Release, ReleaseMeta
from privbench.core.seeding import seeded
from privbench.core.threats import ThreatModel
from privbench.metrics.image import sobel_magnitude
from privbench.models import SplitModel, map_batched, train_classifier
from privbench.ops.coding import FactorizedCoder, FeatureCodec, UniformQuantizer, _check_bits


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x + self.body(x))


class SplitAutoencoder(nn.Module):
    """``encode``: split features ``(N, Cs, h, w)`` -> bottleneck ``(N, b, h, w)`` (no activation);
    ``decode`` mirrors it back to ``(N, Cs, h, w)``."""

    def __init__(self, split_channels: int, width: int, bottleneck: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(split_channels, width, 3, 1, 1), nn.SiLU(), ResBlock(width),
                                     nn.Conv2d(width, bottleneck, 3, 1, 1))
        self.decoder = nn.Sequential(nn.Conv2d(bottleneck, width, 3, 1, 1), nn.SiLU(), ResBlock(width),
                                     nn.Conv2d(width, split_channels, 3, 1, 1))

    def forward(self, h: Tensor) -> Tensor:
        return self.decoder(self.encoder(h))


class RecNet(nn.Module):
    """Adversary: bottleneck ``(N, b, h, w)`` -> image ``(N, C, H, W)`` in [0, 1] with transposed convolutions."""

    def __init__(self, bottleneck: int, channels: int, in_hw: tuple[int, int], out_hw: tuple[int, int],
                 width: int = 64) -> None:
        super().__init__()
        ups = max(0, round(math.log2(max(out_hw[0] / in_hw[0], 1))))
        layers: list[nn.Module] = [nn.Conv2d(bottleneck, width, 3, 1, 1), nn.SiLU()]
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(width, width, 4, 2, 1), nn.SiLU()]
        layers += [nn.Conv2d(width, channels, 3, 1, 1)]
        self.net = nn.Sequential(*layers)
        self.out_hw = out_hw

    def forward(self, z: Tensor) -> Tensor:
        y = self.net(z)
        if tuple(y.shape[-2:]) != self.out_hw:
            y = F.interpolate(y, size=self.out_hw, mode="bilinear", align_corners=False)
        return torch.sigmoid(y)


def reconstruction_loss(x_hat: Tensor, x: Tensor, beta: float) -> Tensor:
    """``L1(x, x̂) + β·L1(Sobel(Y), Sobel(Ŷ))`` on the luma (Azizian & Bajić 2022)."""
    return F.l1_loss(x_hat, x) + beta * F.l1_loss(sobel_magnitude(x_hat, 1e-8), sobel_magnitude(x, 1e-8))


class QuantizedEncoder(nn.Module):
    """The device side: ``x (N,C,H,W)`` -> dequantised bottleneck ``(N, b, h, w)`` exactly as the receiver decodes
    it. Quantisation uses a straight-through rounding so white-box attackers can differentiate through it."""

    def __init__(self, head: nn.Module, encoder: nn.Module, quantizer: UniformQuantizer) -> None:
        super().__init__()
        self.head, self.encoder, self.quantizer = head, encoder, quantizer  # the device side only: no decoder

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(self.head(x))
        zq = self.quantizer.dequantize(self.quantizer.quantize(z))
        return z + (zq - z).detach()


class SplitPipeline(nn.Module):
    """The deployed task model: quantised encoder on the device, decoder and the rest of the task model after."""

    def __init__(self, encoder: QuantizedEncoder, decoder: nn.Module, tail: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder, self.tail = encoder, decoder, tail

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.decoder(self.encoder(x)))


@DEFENSES.register("split-ae")
class SplitAE(Defense):
    """Split-DNN privacy autoencoder, adversarially trained against reconstruction, with real coded bits."""

    claims = frozenset({ThreatModel.OBSERVER})
    surfaces = frozenset({Surface.ENCODER, Surface.BITSTREAM, Surface.MODEL})
    strength = "w_rec"

    @dataclass(frozen=True)
    class Params:
        split: str = ""  # a split point of the task model; "" = its first
        bottleneck: int = 4
        width: int = 32
        w_rec: float = 1.0
        beta: float = 1.0
        bits: int = 8
        pretrain_epochs: int = 12
        adv_epochs: int = 4
        lr: float = 2e-3

        def __post_init__(self) -> None:
            _check_bits(self.bits)
            if self.bottleneck < 1 or self.width < 1:
                raise InputError("bottleneck and width must be >= 1")
            if self.w_rec < 0 or self.beta < 0 or not self.lr > 0:
                raise InputError("w_rec and beta must be >= 0 and lr > 0")
            if self.pretrain_epochs < 0 or self.adv_epochs < 0:
                raise InputError("pretrain_epochs and adv_epochs must be >= 0")

    # --- building -------------------------------------------------------------------------------------------
    def _base(self, splits: Splits, task: TaskConfig) -> SplitModel:
        model = super().task_model(splits.private.images.shape[1], splits.info.num_classes, task)
        if not isinstance(model, SplitModel):
            raise InputError(f"split-ae needs a task model with named split points; {task.model!r} has none")
        return model

    def _parts(self, splits: Splits, task: TaskConfig) -> tuple[SplitModel, nn.Module, nn.Module, tuple[int, ...]]:
        model = self._base(splits, task)
        point = self.params.split or model.split_points[0]
        head, tail = model.head(point), model.tail(point)
        with torch.no_grad():
            shape = tuple(head(splits.private.images[:2]).shape[1:])
        if len(shape) != 3:
            raise InputError(f"split point {point!r} of {task.model!r} gives features of shape {shape}; "
                             "split-ae needs a spatial (C, h, w) split — choose an earlier point")
        return model, head, tail, shape

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        p, t, dev = self.params, ctx.task, ctx.device
        with seeded(ctx.init_generator()):
            model, head, tail, fshape = self._parts(splits, t)
        train_classifier(model, splits.private, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                         generator=ctx.order_generator(), device=dev)
        for m in (head, tail):
            m.to(dev).eval().requires_grad_(False)
        x_all, y_all = splits.private.images, splits.private.labels
        c, hh, ww = splits.info.shape
        with seeded(ctx.generator("autoencoder-init")):
            ae = SplitAutoencoder(fshape[0], p.width, p.bottleneck).to(dev)
            rec = RecNet(p.bottleneck, c, fshape[1:], (hh, ww)).to(dev)
        opt_ae = torch.optim.Adam(ae.parameters(), lr=p.lr)
        opt_rec = torch.optim.Adam(rec.parameters(), lr=p.lr)
        g = ctx.generator("autoencoder-batches")
        n = len(x_all)

        def batches():
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, t.batch_size):
                idx = perm[i:i + t.batch_size]
                if len(idx) >= 2:
                    yield x_all[idx].to(dev), y_all[idx].to(dev)

        for _ in range(p.pretrain_epochs):  # 1) autoencoder with the task model frozen
            for x, y in batches():
                with torch.no_grad():
                    h = head(x)
                h_hat = ae(h)
                loss = F.cross_entropy(tail(h_hat), y) + F.mse_loss(h_hat, h)
                opt_ae.zero_grad(set_to_none=True)
                loss.backward()
                opt_ae.step()
        rec_losses = []
        for _ in range(p.adv_epochs):  # 2) alternate adversary and defender steps
            for x, y in batches():
                with torch.no_grad():
                    z = ae.encoder(head(x))
                l_rec = reconstruction_loss(rec(z), x, p.beta)
                opt_rec.zero_grad(set_to_none=True)
                l_rec.backward()
                opt_rec.step()
                rec_losses.append(float(l_rec.detach()))
                z = ae.encoder(head(x))
                loss = F.cross_entropy(tail(ae.decoder(z)), y)
                if p.w_rec > 0:
                    loss = loss - p.w_rec * reconstruction_loss(rec(z), x, p.beta)
                opt_ae.zero_grad(set_to_none=True)
                loss.backward()
                opt_ae.step()
        ae.eval().requires_grad_(False)
        z_all = map_batched(lambda x: ae.encoder(head(x)), x_all, dev)
        raw = map_batched(head, x_all, dev)
        codec = FeatureCodec.fit(z_all, p.bits)
        raw_codec = FeatureCodec.fit(raw, p.bits)
        raw_bytes = sum(len(b) for b in raw_codec.encode_batch(raw)) / n
        tail_n = max(1, len(rec_losses) // 10)
        extra = {"adversary_loss_final": sum(rec_losses[-tail_n:]) / tail_n if rec_losses else float("nan"),
                 "raw_feature_bytes_per_image": raw_bytes}
        return self._release(head.cpu(), tail.cpu(), ae.cpu(), codec, codec.encode_batch(z_all), extra,
                             (p.bottleneck,) + fshape[1:])

    def _release(self, head: nn.Module, tail: nn.Module, ae: nn.Module, codec: FeatureCodec,
                 payloads: list[bytes], extra: dict[str, float], shape: tuple[int, ...]) -> Release:
        """Assemble the release and remember what :meth:`release_state` must cache."""
        encoder = QuantizedEncoder(head, ae.encoder, codec.quantizer).eval()
        model = SplitPipeline(encoder, ae.decoder, tail).eval()

        bitstream = Bitstream(tuple(payloads), shape, codec)
        extra = dict(extra)
        extra["bytes_per_image"] = bitstream.bytes_per_item
        extra["bytes_vs_raw_features"] = bitstream.bytes_per_item / extra["raw_feature_bytes_per_image"]
        self._state = {"head": head.state_dict(), "tail": tail.state_dict(), "ae": ae.state_dict(),
                       "q_lo": codec.quantizer.lo, "q_hi": codec.quantizer.hi,
                       "pmf": torch.from_numpy(codec.coder.pmf), "extra": extra,
                       "payload_bytes": torch.frombuffer(bytearray(b"".join(payloads)), dtype=torch.uint8),
                       "payload_lengths": torch.tensor([len(b) for b in payloads], dtype=torch.int64)}
        return Release(encoder=encoder, bitstream=bitstream, model=model,
                       meta=ReleaseMeta(bits_per_image=8 * bitstream.bytes_per_item, extra=extra))

    def _ae(self, fshape: tuple[int, ...]) -> nn.Module:
        return SplitAutoencoder(fshape[0], self.params.width, self.params.bottleneck)

    def _code_shape(self, fshape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.params.bottleneck,) + tuple(fshape[1:])

    # --- caching --------------------------------------------------------------------------------------------
    def release_state(self, release: Release) -> dict[str, Any]:
        state = super().release_state(release)
        state.update(self._state)
        return state

    def restore(self, state: Mapping[str, Any], splits: Splits, ctx: RunContext) -> Release:
        model, head, tail, fshape = self._parts(splits, ctx.task)
        head.load_state_dict(state["head"])
        tail.load_state_dict(state["tail"])
        ae = self._ae(fshape)
        ae.load_state_dict(state["ae"])
        for m in (head, tail, ae):
            m.eval().requires_grad_(False)
        codec = FeatureCodec(UniformQuantizer(self.params.bits, state["q_lo"], state["q_hi"]),
                             FactorizedCoder(state["pmf"].numpy()))
        blob, lengths = state["payload_bytes"].numpy().tobytes(), state["payload_lengths"].tolist()
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + n)
        payloads = [blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        release = self._release(head, tail, ae, codec, payloads, dict(state["extra"]), self._code_shape(fshape))
        release.meta = ReleaseMeta(**{**state["meta"], "extra": release.meta.extra})
        return release


class _IdentityAE(nn.Module):
    """No autoencoder: the raw split features are what is quantised, coded and sent."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Identity(), nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        return h


@DEFENSES.register("split-none")
class SplitNone(SplitAE):
    """Undefended split computing: the task model's raw split features, quantised and entropy-coded (the reference
    split-ae is compared against)."""

    claims = frozenset()  # the undefended reference claims nothing
    strength = None

    @dataclass(frozen=True)
    class Params:
        split: str = ""
        bits: int = 8

        def __post_init__(self) -> None:
            _check_bits(self.bits)

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        t, dev = ctx.task, ctx.device
        with seeded(ctx.init_generator()):
            model, head, tail, fshape = self._parts(splits, t)
        train_classifier(model, splits.private, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                         generator=ctx.order_generator(), device=dev)
        for m in (head, tail):
            m.eval().requires_grad_(False)
        raw = map_batched(head, splits.private.images, dev)
        codec = FeatureCodec.fit(raw, self.params.bits)
        payloads = codec.encode_batch(raw)
        extra = {"raw_feature_bytes_per_image": sum(len(b) for b in payloads) / len(payloads)}
        return self._release(head.cpu(), tail.cpu(), _IdentityAE(), codec, payloads, extra, self._code_shape(fshape))

    def _ae(self, fshape: tuple[int, ...]) -> nn.Module:
        return _IdentityAE()

    def _code_shape(self, fshape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(fshape)
