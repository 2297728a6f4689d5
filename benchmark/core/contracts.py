"""The contracts between defenses, attacks and the runner (see docs/DESIGN.md).

A :class:`Defense` turns private data into a :class:`Release`. An :class:`Attack` sees only the surfaces it
declares in ``requires`` (plus public aux data, and a gallery of candidate originals when ``needs_gallery``), and
returns an :class:`AttackOutput`. Metrics are computed centrally by the runner, never inside an attack.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from privbench.core.errors import InputError
from privbench.core.images import Access, ImageSet, Modality, Splits, Surface
from privbench.core.registry import MODELS
from privbench.core.release import Bitstream, GradientAccess, PipelineAccess, Release, ReleaseMeta, TransformAccess
from privbench.core.threats import ThreatModel


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

    def init_generator(self) -> torch.Generator:
        """The task model's initialisation stream. One stream for every defense of a seed (the reference's model,
        a released model, the utility model trained on a released dataset), so that a seed's defended and
        reference models start from the same weights wherever their architectures agree (common random numbers:
        their paired utility difference measures the defense, not the draw)."""
        return self.generator("task-init")

    def order_generator(self) -> torch.Generator:
        """The task training's data-order stream (batches, Poisson samples), shared like :meth:`init_generator`."""
        return self.generator("task-train")

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
    """The utility task model a defense's release is evaluated with. ``patience`` > 0: early stopping on a
    ``validation`` fraction carved from the training data (``privbench.models.train.EarlyStopping``), with
    ``epochs`` the largest budget; 0: a fixed ``epochs``."""

    model: str = "convnet"
    width: int = 32
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    patience: int = 0
    validation: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or self.patience < 0 or not 0 < self.validation < 0.5:
            raise InputError(f"task: patience must be >= 0 and 0 < validation < 0.5, got {self.patience!r}, "
                             f"{self.validation!r}")


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

    def build_many(self, splits: Sequence[Splits], ctxs: Sequence[RunContext]) -> list[Release]:
        """:meth:`build` of each ``(splits[i], ctxs[i])`` (the seeds of one configuration). A defense may override it
        to train its seeds' models together (``privbench.models.batched``), with the same results as one by one
        within float tolerance; the default builds them one by one."""
        return [self.build(s, c) for s, c in zip(splits, ctxs)]

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
