"""What a defense lets out (docs/DESIGN.md, contracts): a :class:`Release` of surfaces (data, transform, encoder,
bitstream, model, gradient oracle, mask, synthetic set) with its :class:`ReleaseMeta`, and the query protocols an
attack sees those surfaces through (:class:`TransformAccess`, :class:`PipelineAccess`, :class:`GradientAccess`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol

import torch
from torch import Tensor, nn

from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Surface

#: ``transform(images (N,C,H,W) in [0,1], generator) -> released images``; fresh secret randomness per call. Video
#: defenses take clips ``(N,T,C,H,W)``, as an :class:`ImageSet` when their person estimator reads the clips'
#: annotations (masks, keypoints).
TransformFn = Callable[[Any, torch.Generator], Tensor]


class Codec(Protocol):
    """A public decoder: ``decode_batch(payloads, shape) -> (N, *shape)`` float features."""

    def decode_batch(self, payloads: list[bytes], shape: tuple[int, ...]) -> Tensor: ...


@dataclass(frozen=True)
class Bitstream:
    """Coded representations of the private samples (one payload each, aligned to private indices) and the public
    decoder (plain data: the codec holds the quantiser range and the coder's probability tables)."""

    payloads: tuple[bytes, ...]
    shape: tuple[int, ...]
    codec: Codec

    def decode(self, items: list[bytes]) -> Tensor:
        """``(len(items), *shape)`` dequantised features."""
        return self.codec.decode_batch(list(items), self.shape)

    @property
    def bytes_per_item(self) -> float:
        return sum(len(p) for p in self.payloads) / max(1, len(self.payloads))


#: ``mechanism(model, images (B,C,H,W), labels (B,), generator[, public]) -> per-parameter gradients`` (the shared
#: update). ``public``: the batch with its sensitive region blanked, passed only when the oracle has one (MaskDP).
GradientMechanism = Callable[..., tuple[Tensor, ...]]


class GradientOracle:
    """The ``gradients`` surface, defender side (shared-update / federated setting).

    The server (attacker) knows the global ``model`` (white-box, the weights the update is computed at) and receives,
    for a training batch, the update ``mechanism`` produces: the mean cross-entropy gradient for plain training, a
    clipped and noised one for DP-SGD. Batches are drawn from what the defender trains on: the private split when
    ``on_private`` (training index ``i`` = private sample ``i``), otherwise its own released training set (e.g.
    synthetic images). ``public``: the training set with its sensitive region blanked (MaskDP), aligned with it.
    This object stays with the defender: attacks get a proxy (``privbench.run.isolation``) that
    forwards batch indices and returns gradients, never the training images, labels or the noise secret.
    """

    def __init__(self, model: nn.Module, mechanism: GradientMechanism, train: ImageSet, on_private: bool,
                 secret: int, public: Optional[Tensor] = None) -> None:
        self.model, self.mechanism, self.on_private = model, mechanism, on_private
        self._train, self._secret, self._public = train, secret, public

    @property
    def train_size(self) -> int:
        return len(self._train)

    @property
    def training_set(self) -> ImageSet:
        """The defender's training set (for the runner: scoring and the malicious-training platform)."""
        return self._train

    def __call__(self, idx: Tensor) -> tuple[Tensor, ...]:
        """Per-parameter gradients (same order as ``model.parameters()``) of the training batch ``idx`` (B,)."""
        from privbench.core.seeding import derive_seed

        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.train_size:
            raise InputError(f"gradient batch indices must lie in [0, {self.train_size}), got {idx.tolist()[:8]}")
        if len(torch.unique(idx)) != len(idx):  # [j]*8 would give sample j 8 times the sensitivity the ε assumes
            raise InputError("gradient batch indices must be distinct: a batch holds each sample at most once")
        # The defender's noise: fixed per (secret, batch as a set), independent across batches; a reordering of
        # the same batch is the same query and gets the same answer (no fresh noise to average away).
        g = torch.Generator().manual_seed(derive_seed(self._secret, "batch", sorted(idx.tolist())))
        dev = next(self.model.parameters()).device
        x, y = self._train.images[idx].to(dev), self._train.labels[idx].to(dev)
        if self._public is not None:
            return tuple(t.detach() for t in self.mechanism(self.model, x, y, g, self._public[idx].to(dev)))
        return tuple(t.detach() for t in self.mechanism(self.model, x, y, g))


@dataclass(frozen=True)
class StepData:
    """The dataset a DP training step samples from: ``images (N, C, H, W)`` or clips ``(N, T, C, H, W)`` in [0, 1],
    ``labels (N,)``, and ``public``, the same samples with their sensitive region blanked (MaskDP), or ``None``."""

    images: Tensor
    labels: Tensor
    public: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: Tensor) -> "StepData":
        """The samples ``idx (B,)``, in that order."""
        return StepData(self.images[idx], self.labels[idx], None if self.public is None else self.public[idx])


class TrainingStep(Protocol):
    """One step of a DP training run, exactly as the defense trains: it draws its own batch from ``data`` (Poisson
    sampling at ``sample_rate``), and returns the update the optimiser applies (one tensor per trainable parameter,
    in ``model.parameters()`` order). The DP audits (``privbench.ops.dpaudit``) run this object, not a copy of it.

    ``neighbour(data, changed)`` is the adjacent dataset of the step's adjacency relation, for the samples where
    ``changed (N,)`` bool is set: removed (add/remove adjacency, DP-SGD) or with their sensitive region blanked
    (zero-out adjacency, MaskDP). ``adjacency`` names the relation.
    """

    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    denominator: float  # the fixed divisor of the summed update (the expected batch size q·N)
    adjacency: str

    def __call__(self, model: nn.Module, data: StepData, sampling: torch.Generator,
                 noise: torch.Generator) -> tuple[Tensor, ...]: ...

    def neighbour(self, data: StepData, changed: Tensor) -> StepData: ...


#: Attacker-supplied training code for the malicious-training threat: ``code(train) -> state_dict`` of the model it
#: trained. Must be picklable (a module-level class or function): it runs in a separate platform process.
TrainingCode = Callable[[ImageSet], Mapping[str, Tensor]]


@dataclass(frozen=True)
class ReleaseMeta:
    epsilon: Optional[float] = None
    delta: Optional[float] = None
    accountant: Optional[str] = None
    bits_per_image: Optional[float] = None
    defense_seconds: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Release:
    """What a defense lets out. A surface is exposed iff its field is not ``None``.

    Attributes:
        data: released images aligned to private indices, ``(N_private, C, H', W')`` in [0, 1].
        transform: the public algorithm, callable on attacker-chosen images with fresh secret randomness.
        encoder: image ``(N,C,H,W)`` -> representation at the split point (a differentiable module).
        bitstream: coded representations of the private samples and their public decoder.
        model: the trained task model.
        gradients: the shared-update oracle (:class:`GradientOracle`, defender side).
        synthetic: a released training set not aligned to private samples (e.g. synthesised images).
        mask: ``(N_private, 1, H, W)`` bool, true where the defense removed content (aligned to ``data``).
        mask_generator: the public mask algorithm, ``images (N,C,H,W), generator -> (N,1,H,W)`` bool; it returns
            the masks that ``transform`` applies when called with a generator in the same state.
        inference_transform: applied to test images before the task model (input-side defenses act at inference).
    """

    data: Optional[ImageSet] = None
    transform: Optional[TransformFn] = None
    encoder: Optional[nn.Module] = None
    bitstream: Optional[Bitstream] = None
    model: Optional[nn.Module] = None
    gradients: Optional[GradientOracle] = None
    mask: Optional[Tensor] = None
    mask_generator: Optional[Callable[[Tensor, torch.Generator], Tensor]] = None
    inference_transform: Optional[TransformFn] = None
    synthetic: Optional[ImageSet] = None
    meta: ReleaseMeta = field(default_factory=ReleaseMeta)
    pipeline: Optional[PipelineAccess] = None

    @property
    def surfaces(self) -> frozenset[Surface]:
        return frozenset(s for s in Surface if getattr(self, s.value) is not None)


class TransformAccess(Protocol):
    """The ``transform`` surface as attacks see it: query access to the public algorithm.

    Each call applies the defense to attacker-chosen images ``(N,C,H,W)`` in [0, 1] with fresh secret randomness
    drawn by the defender; clips ``(N,T,C,H,W)`` may come as an :class:`ImageSet` carrying their masks and keypoints
    (video defenses whose person estimator reads annotations). ``public`` holds the algorithm's public parameters
    (e.g. VisualMixer's region sides).
    """

    public: Mapping[str, Any]
    has_mask: bool

    def __call__(self, images: Tensor | ImageSet) -> Tensor: ...

    def with_mask(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(released, removed-mask (N,1,H,W) bool)`` from one secret draw (``mask`` surface only)."""
        ...


class PipelineAccess(Protocol):
    """The defense's public training pipeline (Kerckhoffs), as adaptive model-side attacks see it.

    ``identity`` names the pipeline (defense, params and code), for caching what is trained with it.
    """

    identity: str

    def __call__(self, train: ImageSet) -> Mapping[str, Tensor]:
        """The state dict of the model the defense would release had it been given ``train`` as its private data
        (trained by the defender with fresh secret randomness)."""
        ...


class GradientAccess(Protocol):
    """The ``gradients`` surface as attacks see it: the global model (white-box) and the shared update of a batch."""

    model: nn.Module
    train_size: int
    on_private: bool

    def __call__(self, idx: Tensor) -> tuple[Tensor, ...]:
        """The update of training batch ``idx (B,)``: per-parameter tensors, in ``model.parameters()`` order."""
        ...

    def run_training(self, code: TrainingCode) -> Mapping[str, Tensor]:
        """Malicious training code (Song et al., CCS 2017): the platform runs ``code`` on its training set in a
        separate process and returns only the state dict it produced."""
        ...
