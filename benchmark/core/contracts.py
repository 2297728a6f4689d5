"""The contracts between defenses, attacks and the runner (see docs/DESIGN.md).

A :class:`Defense` turns private data into a :class:`Release`. An :class:`Attack` sees only the surfaces it
declares in ``requires`` (plus public aux data, and a gallery of candidate originals when ``needs_gallery``), and
returns an :class:`AttackOutput`. Metrics are computed centrally by the runner, never inside an attack.
"""

from __future__ import annotations

import dataclasses
import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional, Protocol

import torch
from torch import Tensor, nn

from privbench.core.errors import InputError
from privbench.core.registry import MODELS
from privbench.core.threats import ThreatModel


class Surface(str, enum.Enum):
    """What may leave the defender (docs/DESIGN.md, Release surfaces)."""

    DATA = "data"
    TRANSFORM = "transform"
    ENCODER = "encoder"
    BITSTREAM = "bitstream"
    MODEL = "model"
    GRADIENTS = "gradients"
    MASK = "mask"  # where content was removed from each released sample, plus the public mask generator
    SYNTHETIC = "synthetic"  # a released data set NOT aligned to private samples (e.g. synthesised images)


class Access(str, enum.Enum):
    WHITE_BOX = "white-box"
    BLACK_BOX = "black-box"


class Modality(str, enum.Enum):
    """What a sample is (docs/DESIGN.md, Modalities): an image ``(C, H, W)`` or a video clip ``(T, C, H, W)``."""

    IMAGE = "image"
    VIDEO = "video"

    @classmethod
    def of(cls, sample_shape: tuple[int, ...]) -> "Modality":
        return cls.VIDEO if len(sample_shape) == 4 else cls.IMAGE


@dataclass(frozen=True)
class ImageSet:
    """Samples with integer labels ``(N,)``: images ``(N, C, H, W)`` or video clips ``(N, T, C, H, W)``, float32 in
    [0, 1] (docs/DESIGN.md, Modalities).

    Optional per-sample annotations (where known; video datasets carry them):
        identities: ``(N,)`` int64 person identity of each sample.
        masks: ``(N, [T,] 1, H, W)`` bool, where a person is.
        keypoints: ``(N, [T,] J, 2)`` float32 pixel coordinates (x, y) of the person's joints.
    """

    images: Tensor
    labels: Tensor
    identities: Optional[Tensor] = None
    masks: Optional[Tensor] = None
    keypoints: Optional[Tensor] = None

    def __post_init__(self) -> None:
        check_images(self.images, "images")
        n = self.images.shape[0]
        if self.labels.ndim != 1 or self.labels.shape[0] != n:
            raise InputError(f"labels: expected shape ({n},), got {tuple(self.labels.shape)}")
        if self.identities is not None and tuple(self.identities.shape) != (n,):
            raise InputError(f"identities: expected shape ({n},), got {tuple(self.identities.shape)}")
        lead = tuple(self.images.shape[:-3])  # (N,) or (N, T)
        if self.masks is not None and (tuple(self.masks.shape[:-3]) != lead or self.masks.shape[-3] != 1
                                       or self.masks.shape[-2:] != self.images.shape[-2:]):
            raise InputError(f"masks: expected shape {lead + (1,) + tuple(self.images.shape[-2:])}, "
                             f"got {tuple(self.masks.shape)}")
        if self.keypoints is not None and (tuple(self.keypoints.shape[:-2]) != lead or self.keypoints.shape[-1] != 2):
            raise InputError(f"keypoints: expected shape {lead + ('J', 2)}, got {tuple(self.keypoints.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: Tensor) -> "ImageSet":
        return ImageSet(self.images[idx], self.labels[idx], *(None if t is None else t[idx] for t in
                                                              (self.identities, self.masks, self.keypoints)))

    def replace_images(self, images: Tensor) -> "ImageSet":
        """The same samples and annotations with other pixels (e.g. a release aligned to these samples)."""
        return dataclasses.replace(self, images=images)

    @property
    def is_video(self) -> bool:
        return self.images.ndim == 5

    @property
    def shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(T, C, H, W)`` for clips."""
        return tuple(self.images.shape[1:])


def check_images(x: Tensor, name: str) -> None:
    """Raise :class:`InputError` unless ``x`` is a finite float tensor ``(N, C, H, W)`` or ``(N, T, C, H, W)`` in
    [0, 1]."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (4, 5):
        raise InputError(f"{name}: expected shape (N, C, H, W) or (N, T, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a float tensor, got {x.dtype}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise InputError(f"{name}: contains NaN or infinite pixels")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise InputError(f"{name}: pixel values must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    shape: tuple[int, ...]  # (C, H, W) or (T, C, H, W)
    sizes: Mapping[str, int]
    hash: str
    split_hashes: Mapping[str, str]


@dataclass(frozen=True)
class Splits:
    """Seeded, disjoint splits. ``targets`` indexes ``private``."""

    private: ImageSet
    aux: ImageSet
    test: ImageSet
    targets: Tensor
    info: DatasetInfo


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



@dataclass(frozen=True)
class RunContext:
    """Per-cell settings handed to a defense (trusted side). Its generators draw the defense's secret randomness
    from a stream that attack code cannot derive (``privbench.core.seeding``); no global state."""

    seed: int
    device: torch.device
    task: "TaskConfig"
    progress: bool = False

    def generator(self, salt: int | str = 0) -> torch.Generator:
        """A fresh generator of the defense's secret stream ``salt``."""
        from privbench.core.seeding import derive_seed

        return torch.Generator().manual_seed(derive_seed(self.seed, "defense-secret", salt))

    def secret(self, salt: int | str) -> int:
        """A secret integer of the defense's stream ``salt`` (e.g. the seed of an oracle's noise)."""
        from privbench.core.seeding import derive_seed

        return derive_seed(self.seed, "defense-secret", salt)


@dataclass(frozen=True)
class AttackContext:
    """What an attack gets besides its view: a device, the suite's task recipe (public), its own random stream and
    an artifact memo. It never holds the cell seed: ``stream`` is a one-way function of it and the attack's label.

    ``memo(key, make) -> dict``: cached attack artifacts that do not depend on the defense (e.g. shadow models),
    keyed by the runner with the attack's code hash; ``None`` = compute every time.
    """

    device: torch.device
    task: "TaskConfig"
    stream: int
    memo: Optional[Callable[[str, Callable[[], dict]], dict]] = None

    def generator(self, salt: int | str = 0) -> torch.Generator:
        from privbench.core.seeding import derive_seed

        return torch.Generator().manual_seed(derive_seed(self.stream, "attack", salt))

    def remember(self, key: str, make: Callable[[], dict]) -> dict:
        return make() if self.memo is None else self.memo(key, make)


@dataclass(frozen=True)
class TaskConfig:
    """The utility task model a defense's release is evaluated with."""

    model: str = "convnet"
    width: int = 32
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3


class Plugin(ABC):
    """Common base: a registered id, a frozen ``Params`` dataclass and the modalities the plugin handles."""

    id: ClassVar[str]
    modalities: ClassVar[frozenset[Modality]] = frozenset({Modality.IMAGE})

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()
        if not isinstance(self.params, self.Params):
            raise InputError(f"{type(self).__name__}: params must be {self.Params.__qualname__}")

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    @classmethod
    def handles(cls, modality: Modality) -> Optional[str]:
        """``None`` if the plugin handles ``modality``, else the reason to skip its cells."""
        if modality in cls.modalities:
            return None
        return f"{cls.__name__} handles {', '.join(sorted(m.value for m in cls.modalities))}, not {modality.value}"


class Defense(Plugin):
    """Base class for defenses. Subclasses set ``surfaces`` and implement :meth:`build`.

    ``strength`` names the Params field that a sweep varies (larger = intended to be more private).
    """

    surfaces: ClassVar[frozenset[Surface]]
    strength: ClassVar[Optional[str]] = None
    #: Threat models the defense claims protection against (its card); others show "not claimed" in the tables.
    claims: ClassVar[frozenset[ThreatModel]] = frozenset()
    #: A positive control (``defenses/controls.py``): a defense built to be broken, run only against the attacks
    #: that name it in :attr:`Attack.positive_controls`, shown in the competence gate and never ranked.
    control: ClassVar[bool] = False

    @abstractmethod
    def build(self, splits: Splits, ctx: RunContext) -> Release:
        """Produce the release of ``splits.private``. Expensive parts are cached by the runner."""

    def transform(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The public algorithm applied to attacker-chosen images ``(N,C,H,W)`` in [0, 1]."""
        raise InputError(f"defense {self.id!r} has no public transform")

    def public_info(self, shape: tuple[int, int, int]) -> dict[str, Any]:
        """Public parameters of the algorithm for images of ``shape`` (C, H, W), shown to attacks with the
        ``transform`` surface (Kerckhoffs: the algorithm is public, its secret randomness is not)."""
        return {}

    def claimed(self) -> frozenset[ThreatModel]:
        """The threat models this configuration claims protection against (default: the class's ``claims``)."""
        return type(self).claims

    def strength_param(self) -> Optional[str]:
        """The Params field that sets this configuration's privacy (shown in table labels; default: the class's
        ``strength``). DP defenses name ``target_epsilon`` when it is set (then smaller is stronger)."""
        return type(self).strength

    def recipe_reference(self) -> Optional[Any]:
        """Params of this defense that keep its training recipe but drop its protection (e.g. DP-SGD at σ = 0):
        the fair utility reference, reported next to the drop against the suite's reference defense. ``None``:
        there is none."""
        return None

    def task_model(self, in_channels: int, num_classes: int, task: "TaskConfig") -> nn.Module:
        """The utility model this defense prescribes (default: the suite's task model)."""
        return MODELS.get(task.model)(in_channels, num_classes, width=task.width)

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        """The optimizer this defense prescribes for its utility model (default: Adam)."""
        return torch.optim.Adam(params, lr=lr)

    def release_state(self, release: Release) -> dict[str, Any]:
        """Tensors and numbers that rebuild ``release`` without re-running :meth:`build` (for the cache).

        Defenses exposing surfaces beyond ``data``/``transform`` (e.g. a model) extend this and :meth:`restore`.
        """
        state: dict[str, Any] = {"meta": dataclasses.asdict(release.meta)}
        state["meta"]["extra"] = dict(release.meta.extra)
        if release.data is not None:
            state["data_images"] = release.data.images
            state["data_labels"] = release.data.labels
        if release.mask is not None:
            state["mask"] = release.mask
        return state

    def restore(self, state: Mapping[str, Any], splits: Splits, ctx: RunContext) -> Release:
        """Inverse of :meth:`release_state`."""
        data = ImageSet(state["data_images"], state["data_labels"]) if "data_images" in state else None
        public = self.transform if Surface.TRANSFORM in self.surfaces else None
        masks = self.mask_generator if Surface.MASK in self.surfaces else None
        return Release(data=data, transform=public, inference_transform=public, mask=state.get("mask"),
                       mask_generator=masks, meta=ReleaseMeta(**state["meta"]))

    def mask_generator(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The public mask algorithm of masking defenses: ``(N,C,H,W) -> (N,1,H,W)`` bool."""
        raise InputError(f"defense {self.id!r} has no mask generator")


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


@dataclass
class ReleaseView:
    """The release restricted to what one attack declared: plain data and query-only accessors.

    Attributes:
        data, mask, synthetic, model, encoder, bitstream, meta: copies of the release's fields (see :class:`Release`).
        transform: query access to the public algorithm (:class:`TransformAccess`).
        gradients: query access to the shared update (:class:`GradientAccess`).
        pipeline: the defense's training pipeline on attacker-chosen data (:class:`PipelineAccess`), given to
            ``adaptive`` attacks that see a released model.
    """

    data: Optional[ImageSet] = None
    transform: Optional[TransformAccess] = None
    encoder: Optional[nn.Module] = None
    bitstream: Optional[Bitstream] = None
    model: Optional[nn.Module] = None
    gradients: Optional[GradientAccess] = None
    mask: Optional[Tensor] = None
    synthetic: Optional[ImageSet] = None
    meta: ReleaseMeta = field(default_factory=ReleaseMeta)
    pipeline: Optional[PipelineAccess] = None

    @property
    def surfaces(self) -> frozenset[Surface]:
        return frozenset(s for s in Surface if getattr(self, s.value) is not None)


@dataclass
class AttackView:
    """Everything an attack may see. Private originals reach it only through ``release`` or ``gallery``.

    Attributes:
        release: the release restricted to the attack's ``requires`` (and the optional surfaces it ``uses``).
        aux: public same-distribution data, disjoint from private.
        targets: indices into ``release.data`` of the samples under attack (their originals are hidden).
        gallery: candidate originals ``(G,C,H,W)`` for linkage attacks (shuffled; ground truth kept by the runner);
            for identity-labelled clips, an :class:`ImageSet` of other clips of the private people with their masks
            and keypoints (labels zeroed, identities withheld).
        candidates: membership candidates (members and non-members shuffled; ground truth kept by the runner).
        image_shape: ``(C, H, W)`` (or ``(T, C, H, W)``) of the originals; ``num_classes`` of the task.
        train_size: how many private samples the defense trained on (public, as a model card states it), so
            shadow models can match it.
    """

    release: ReleaseView
    aux: ImageSet
    targets: Tensor
    image_shape: tuple[int, ...]
    num_classes: int
    gallery: Optional[Tensor | ImageSet] = None
    candidates: Optional[ImageSet] = None
    train_size: Optional[int] = None


@dataclass
class AttackOutput:
    """What an attack returns; scored centrally.

    Attributes:
        reconstructions: ``(N_targets, C, H, W)`` in [0, 1], aligned with ``view.targets``.
        rankings: per method, ``(N_targets, G)`` gallery indices, best first.
        membership_scores: per method, ``(M,)`` scores aligned with ``view.candidates``, higher = more likely member.
        groups: ``(N,)`` batch ids: within a group the order of reconstructions is free (a batch's gradient does not
            say which image is which); the runner matches them to originals by minimum MSE (Hungarian).
        sources: ``(N,)`` indices into the gradient oracle's training set that the reconstructions target, when they
            are not aligned with ``view.targets``.
        class_labels: ``(N,)``: reconstructions are class prototypes, scored against the nearest private original
            of that class (GAN attack, or training data that is not private, e.g. synthetic).
        per_gallery: ``(G, C, H, W)``: one reconstruction per gallery image (e.g. its nearest released image); the
            runner keeps the targets' rows as ``reconstructions``.
        extra: attack-specific numbers (stored as metrics under ``attack.``).
    """

    reconstructions: Optional[Tensor] = None
    rankings: Optional[dict[str, Tensor]] = None
    membership_scores: Optional[dict[str, Tensor]] = None
    groups: Optional[Tensor] = None
    sources: Optional[Tensor] = None
    class_labels: Optional[Tensor] = None
    per_gallery: Optional[Tensor] = None
    extra: dict[str, float] = field(default_factory=dict)


class Attack(Plugin):
    """Base class for attacks. Subclasses set ``requires``, ``access`` and implement :meth:`run`."""

    requires: ClassVar[frozenset[Surface]]
    uses: ClassVar[frozenset[Surface]] = frozenset()  # optional surfaces, exposed when the release has them
    access: ClassVar[Access]
    adaptive: ClassVar[bool] = False
    needs_gallery: ClassVar[bool] = False
    needs_candidates: ClassVar[bool] = False
    #: Who the attacker is (:class:`~privbench.core.threats.ThreatModel`); ``None``: derived by :meth:`threat_model`.
    threat: ClassVar[Optional[ThreatModel]] = None
    #: Positive controls: ``{defense id: bar}``, each a defense this attack must break, with the calibrated
    #: advantage its CI's lower bound must reach there (docs/DESIGN.md, competence). A suite's cells on a control
    #: defense judge the attack's competence; ``tests/test_controls.py`` runs every one.
    positive_controls: ClassVar[Mapping[str, float]] = {}

    @classmethod
    def threat_model(cls) -> ThreatModel:
        """``threat`` if set; else gradients -> server, model -> model holder, a gallery -> linker, else observer."""
        if cls.threat is not None:
            return cls.threat
        if Surface.GRADIENTS in cls.requires:
            return ThreatModel.SERVER
        if Surface.MODEL in cls.requires:
            return ThreatModel.MODEL_HOLDER
        return ThreatModel.LINKER if cls.needs_gallery else ThreatModel.OBSERVER

    @classmethod
    def requirements(cls) -> str:
        """Human-readable requirements, e.g. ``data,transform``."""
        return ",".join(sorted(s.value for s in cls.requires)) or "-"

    def compatible(self, surfaces: frozenset[Surface]) -> Optional[str]:
        """``None`` if the release exposes what this attack requires, else the reason to skip."""
        missing = self.requires - surfaces
        if missing:
            return "release lacks surface(s): " + ", ".join(sorted(s.value for s in missing))
        return None

    @abstractmethod
    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        """Attack ``view`` and return outputs aligned with ``view.targets``."""
