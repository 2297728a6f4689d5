"""Malicious-training memorisation (Song, Ristenpart & Shmatikov, "Machine Learning Models that Remember Too Much",
CCS 2017).

Threat: the training code is the attacker's. The platform runs it on its training set (the ``gradients``
surface's ``run_training``, in a separate platform process) and releases only the trained weights; the attacker then decodes
training images from the model's parameters. Encodings (``encoding``):

- ``lsb``: train normally, then overwrite the ``bits`` least significant mantissa bits of every float32 parameter
  with the images' 8-bit pixels (white-box; exact up to 8-bit quantisation).
- ``correlation``: add ``−λ·|corr(θ, s)|`` (λ = 10) to the loss, with ``θ`` the first parameters and ``s`` the secret pixels;
  decode by min–max scaling ``θ`` per image, with the correlation's sign.
- ``capacity``: capacity abuse — train on extra pseudo-random inputs (from a seed the attacker keeps) labelled with
  ``floor(log2 K)`` secret bits each; decode black-box from the released model's predictions on the regenerated
  inputs. It hides ``THUMB``×``THUMB`` thumbnails at ``bits`` bits per pixel (upsampled for scoring).
- ``sign``: add ``λ·Σ_i relu(m − θ_i·b_i)`` (margin ``m`` = 1e-3) with ``b_i = ±1`` the secret bits (pixels quantised to ``bits`` bits);
  decode each bit from the sign of ``θ_i``.

Against DP-SGD the attacker's code does not have to be private, so DP does not stop this threat (the record notes
it); against synthetic-data training the training set is synthetic, so what leaks is synthetic (scored against the
nearest private original of the class and, as ``training_*``, against the synthetic images themselves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import Access, ImageSet, Surface
from privbench.core.registry import ATTACKS
from privbench.core.release import GradientAccess
from privbench.core.seeding import seeded
from privbench.core.threats import ThreatModel
from privbench.models import build_model, train_classifier


def _flat_params(model: nn.Module) -> Tensor:
    return torch.cat([p.reshape(-1) for p in model.parameters()])


def _capacity(model: nn.Module, per_image: int, what: str) -> int:
    """How many images of ``per_image`` parameters the model can hold (at least one, else an error)."""
    if per_image == 0:
        return 2 ** 62  # not stored in the parameters
    have = sum(p.numel() for p in model.parameters())
    if per_image > have:
        raise InputError(f"memorization: {what} needs {per_image} parameters per image, the task model has {have}")
    return have // per_image


@dataclass(frozen=True)
class Encoding:
    """How secrets enter training (``penalty``, ``augment``) or the trained weights (``embed``), and how they come
    out (``decode``). ``params_per_pixel(bits) == 0`` means the encoding does not live in the parameters."""

    penalty: Callable[[Tensor, int], Callable[[nn.Module], Tensor]] | None
    embed: Callable[[nn.Module, Tensor, int], None] | None
    decode: Callable[[nn.Module, tuple[int, ...], int], Tensor]
    params_per_pixel: Callable[[int], int]
    augment: Callable[[Tensor, int, int], ImageSet] | None = None


def _pixels8(images: Tensor) -> Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.int64).reshape(-1)


def _lsb_embed(model: nn.Module, images: Tensor, bits: int) -> None:
    """Write each 8-bit pixel into ``ceil(8 / bits)`` consecutive parameters' low ``bits`` mantissa bits."""
    per = -(-8 // bits)
    px = _pixels8(images)
    chunks = torch.stack([(px >> (bits * k)) & ((1 << bits) - 1) for k in range(per)], 1).reshape(-1)
    with torch.no_grad():
        flat = _flat_params(model).detach().clone()
        raw = flat.view(torch.int32)
        mask = (1 << bits) - 1
        raw[: len(chunks)] = (raw[: len(chunks)] & ~mask) | chunks.to(torch.int32)
        torch.nn.utils.vector_to_parameters(raw.view(torch.float32), model.parameters())


def _lsb_decode(model: nn.Module, shape: tuple[int, ...], bits: int) -> Tensor:
    per = -(-8 // bits)
    n = int(np.prod(shape))
    raw = _flat_params(model).detach().contiguous().view(torch.int32)[: n * per].to(torch.int64)
    chunks = (raw & ((1 << bits) - 1)).reshape(n, per)
    px = sum(chunks[:, k] << (bits * k) for k in range(per)) & 255
    return (px.float() / 255).reshape(shape)


def _corr_penalty(images: Tensor, bits: int, weight: float = 10.0) -> Callable[[nn.Module], Tensor]:
    s = images.reshape(-1).float()
    s = s - s.mean()

    def penalty(model: nn.Module) -> Tensor:
        theta = _flat_params(model)[: len(s)]
        t = theta - theta.mean()
        corr = (t * s.to(t.device)).sum() / (t.norm() * s.norm() + 1e-12)
        return -weight * corr.abs()

    return penalty


def _corr_decode(model: nn.Module, shape: tuple[int, ...], bits: int) -> Tensor:
    n = int(np.prod(shape))
    theta = _flat_params(model).detach()[:n].reshape(shape[0], -1)
    lo, hi = theta.min(1, keepdim=True).values, theta.max(1, keepdim=True).values
    x = (theta - lo) / (hi - lo + 1e-12)
    # The encoding maximises |corr|; images are mostly dark backgrounds, so choose the sign whose median is darker.
    flip = x.median(1, keepdim=True).values > 0.5
    return torch.where(flip, 1 - x, x).reshape(shape)


def _secret_bits(images: Tensor, bits: int) -> Tensor:
    q = (images.clamp(0, 1) * (2 ** bits - 1)).round().to(torch.int64).reshape(-1)
    return torch.stack([(q >> k) & 1 for k in range(bits)], 1).reshape(-1)


def _sign_penalty(images: Tensor, bits: int, weight: float = 1.0, margin: float = 1e-3
                  ) -> Callable[[nn.Module], Tensor]:
    b = _secret_bits(images, bits).float() * 2 - 1

    def penalty(model: nn.Module) -> Tensor:
        theta = _flat_params(model)[: len(b)]
        return weight * torch.relu(margin - theta * b.to(theta.device)).sum()

    return penalty


def _sign_decode(model: nn.Module, shape: tuple[int, ...], bits: int) -> Tensor:
    n = int(np.prod(shape))
    theta = _flat_params(model).detach()[: n * bits].reshape(n, bits)
    q = sum(((theta[:, k] > 0).long() << k) for k in range(bits))
    return (q.float() / (2 ** bits - 1)).reshape(shape)


#: Capacity abuse hides ``THUMB``×``THUMB`` thumbnails (an attacker's choice: 28×28 images at 4 bits would need
#: about 1,000 extra training inputs each).
THUMB = 7
_ABUSE_SEED = 20_171_030  # the attacker's public seed for the synthetic inputs (regenerated at decoding time)


def _abuse_inputs(count: int, shape: tuple[int, ...]) -> Tensor:
    g = torch.Generator().manual_seed(_ABUSE_SEED)
    return torch.rand((count,) + tuple(shape), generator=g)


def _label_bits(num_classes: int) -> int:
    return max(1, int(np.floor(np.log2(num_classes))))


def _thumb_bits(images: Tensor, bits: int) -> Tensor:
    small = torch.nn.functional.interpolate(images, size=(THUMB, THUMB), mode="area")
    return _secret_bits(small, bits)


def _abuse_augment(images: Tensor, bits: int, num_classes: int) -> ImageSet:
    """Capacity abuse: one synthetic input per ``floor(log2 K)`` secret bits, labelled with those bits."""
    k = _label_bits(num_classes)
    stream = _thumb_bits(images, bits)
    stream = torch.cat([stream, stream.new_zeros((-len(stream)) % k)]).reshape(-1, k)
    labels = sum(stream[:, j] << j for j in range(k))
    return ImageSet(_abuse_inputs(len(labels), images.shape[1:]), labels)


def _abuse_decode(model: nn.Module, shape: tuple[int, ...], bits: int) -> Tensor:
    """Black-box: query the released model on the regenerated inputs, read the bits off its predicted labels."""
    n, c = shape[0], shape[1]
    total = n * c * THUMB * THUMB * bits
    probe = model(_abuse_inputs(1, shape[1:]))
    k = _label_bits(probe.shape[1])
    with torch.no_grad():
        pred = model(_abuse_inputs(-(-total // k), shape[1:])).argmax(1).clamp(max=2 ** k - 1)
    stream = torch.stack([(pred >> j) & 1 for j in range(k)], 1).reshape(-1)[:total].reshape(-1, bits)
    q = sum(stream[:, j] << j for j in range(bits))
    small = (q.float() / (2 ** bits - 1)).reshape(n, c, THUMB, THUMB)
    return torch.nn.functional.interpolate(small, size=tuple(shape[2:]), mode="bilinear", align_corners=False)


ENCODINGS: dict[str, Encoding] = {
    "lsb": Encoding(None, _lsb_embed, _lsb_decode, lambda bits: -(-8 // bits)),
    "correlation": Encoding(_corr_penalty, None, _corr_decode, lambda bits: 1),
    "sign": Encoding(_sign_penalty, None, _sign_decode, lambda bits: bits),
    "capacity": Encoding(None, None, _abuse_decode, lambda bits: 0, _abuse_augment),
}


@ATTACKS.register("memorization")
class Memorization(Attack):
    """Song et al. (CCS 2017): malicious training code hides training images in the released model's parameters."""

    threat = ThreatModel.TRAINING_CODE
    positive_controls = {"none": 0.5}  # plain training runs the malicious code unhindered
    requires = frozenset({Surface.GRADIENTS})
    access = Access.WHITE_BOX

    @dataclass(frozen=True)
    class Params:
        encoding: str = "lsb"
        images: int = 8  # how many training images the code hides (fewer if the model cannot hold them)
        bits: int = 8  # lsb: low mantissa bits per parameter; sign, capacity: bits per pixel; correlation: unused

        def __post_init__(self) -> None:
            if self.encoding not in ENCODINGS:
                raise InputError(f"encoding must be one of {sorted(ENCODINGS)}, got {self.encoding!r}")
            if self.images < 1 or not 1 <= self.bits <= 8:
                raise InputError("images must be >= 1 and bits in [1, 8]")

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        oracle: GradientAccess | None = view.release.gradients
        assert oracle is not None
        p, t = self.params, ctx.task
        enc = ENCODINGS[p.encoding]
        probe = build_model(t.model, view.image_shape[0], view.num_classes, width=t.width)
        per_image = int(np.prod(view.image_shape)) * enc.params_per_pixel(p.bits)
        n = min(p.images, oracle.train_size, _capacity(probe, per_image, p.encoding))  # as many as fit
        sources = view.targets[:n] if oracle.on_private else torch.arange(n)
        shape = (n,) + tuple(view.image_shape)
        g = ctx.generator("malicious-training")
        code = MaliciousTraining(p.encoding, p.bits, sources.clone(), t, view.num_classes,
                                 init_seed=int(torch.randint(0, 2**62, (1,), generator=g)),
                                 train_seed=int(torch.randint(0, 2**62, (1,), generator=g)), device=str(ctx.device))
        state = oracle.run_training(code)
        released = build_model(t.model, view.image_shape[0], view.num_classes, width=t.width)
        released.load_state_dict(dict(state))
        recon = enc.decode(released.eval(), shape, p.bits).clamp(0, 1)
        return AttackOutput(reconstructions=recon, sources=sources, extra={"encoded_images": float(n)})


@dataclass(frozen=True)
class MaliciousTraining:
    """The attacker's training code (picklable): trains the suite's task model on the platform's training set while
    hiding the training images ``sources`` with ``encoding``. Runs in the platform's process; only the returned
    state dict leaves it."""

    encoding: str
    bits: int
    sources: Tensor
    task: TaskConfig
    num_classes: int
    init_seed: int
    train_seed: int
    device: str = "cpu"

    def __call__(self, train: ImageSet) -> dict[str, Tensor]:
        enc, t = ENCODINGS[self.encoding], self.task
        secret = train.images[self.sources]
        with seeded(torch.Generator().manual_seed(self.init_seed)):
            model = build_model(t.model, train.images.shape[1], self.num_classes, width=t.width)
        penalty = enc.penalty(secret, self.bits) if enc.penalty is not None else None
        if enc.augment is not None:
            extra = enc.augment(secret, self.bits, self.num_classes)
            train = ImageSet(torch.cat([train.images, extra.images]), torch.cat([train.labels, extra.labels]))
        train_classifier(model, train, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                         generator=torch.Generator().manual_seed(self.train_seed), device=torch.device(self.device),
                         penalty=penalty)
        if enc.embed is not None:
            enc.embed(model.cpu(), secret, self.bits)
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
