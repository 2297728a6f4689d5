"""Dataset registry, pools and seeded splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from privbench.core.errors import InputError
from privbench.core.images import DatasetInfo, ImageSet, Splits, check_images
from privbench.core.keys import keyed_seed
from privbench.core.registry import DATASETS
from privbench.core.seeding import derive_seed
from privbench.core.specs import SplitConfig


@dataclass(frozen=True)
class Pool:
    """All samples of a dataset: ``images (N,C,H,W)`` or clips ``(N,T,C,H,W)`` float32 in [0,1], ``labels (N,)``
    int64.

    ``fixed_test`` optionally marks a predefined test split (e.g. MNIST's t10k files) as a boolean mask.
    ``identities (N,)``, ``masks`` and ``keypoints``: per-sample annotations (see :class:`ImageSet`); with
    identities, the splits are identity-disjoint (private, aux and test people never overlap).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    fixed_test: torch.Tensor | None = None
    identities: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None

    def samples(self, idx: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[idx].contiguous(), self.labels[idx].contiguous(),
                        *(None if t is None else t[idx].contiguous()
                          for t in (self.identities, self.masks, self.keypoints)))


DatasetFn = Callable[[Mapping[str, Any]], Pool]


def pool_hash(pool: Pool) -> str:
    """Content hash of a pool (images quantised to 8 bits, plus labels)."""
    h = hashlib.sha256()
    q = (pool.images * 255).round().to(torch.uint8).numpy()
    h.update(str(q.shape).encode())
    h.update(q.tobytes())
    h.update(pool.labels.numpy().astype(np.int64).tobytes())
    for extra in (pool.identities, pool.masks, pool.keypoints):
        if extra is not None:
            h.update(np.ascontiguousarray(extra.numpy()).tobytes())
    return h.hexdigest()


def _index_hash(idx: torch.Tensor) -> str:
    return hashlib.sha256(idx.numpy().astype(np.int64).tobytes()).hexdigest()[:16]


def _scaled_sizes(name: str, cfg: SplitConfig, available: int, has_fixed_test: bool) -> dict[str, int]:
    want = {"private": cfg.private, "aux": cfg.aux} if has_fixed_test else {
        "private": cfg.private, "aux": cfg.aux, "test": cfg.test}
    total = sum(want.values())
    if total <= available:
        return want
    if cfg.scale != "fit":
        fields = " + ".join(f"splits.{k} ({v})" for k, v in want.items())
        raise InputError(f"dataset {name!r} has {available} images for {fields} = {total}; request fewer, or set "
                         f"splits.scale: fit to shrink them proportionally")
    scale = available / total
    return {k: max(1, int(v * scale)) for k, v in want.items()}


def _order(n: int, sizes: dict[str, int], fixed_aux: bool, g: torch.Generator) -> torch.Tensor:
    """A permutation of ``range(n)`` read as ``sizes["private"]`` private, ``sizes["aux"]`` aux, then the rest
    (``load_splits``'s layout). With ``fixed_aux`` the aux indices are the same for every seed and run key (drawn
    from a fixed generator) and the seed's generator orders the others, so that what is tuned on aux is disjoint
    from every seed's private split."""
    if not fixed_aux:
        return torch.randperm(n, generator=g)
    fixed = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(0, "fixed-aux")))
    aux_idx, rest = fixed[:sizes["aux"]], fixed[sizes["aux"]:]
    rest = rest[torch.randperm(len(rest), generator=g)]
    return torch.cat([rest[:sizes["private"]], aux_idx, rest[sizes["private"]:]])


def _identity_disjoint(name: str, cfg: SplitConfig, identities: torch.Tensor, g: torch.Generator
                       ) -> tuple[dict[str, int], torch.Tensor, torch.Tensor]:
    """Split by person: identities are shuffled and dealt to private, aux and test in proportion to the requested
    sizes (at least one each), then each split keeps up to its requested number of those people's samples.

    Returns ``(sizes, perm, test_idx)`` with ``perm`` = private then aux indices (the layout of ``load_splits``).
    """
    people = torch.unique(identities)
    if len(people) < 3:
        raise InputError(f"dataset {name!r} has {len(people)} identities; identity-disjoint splits need at least 3")
    want = {"private": cfg.private, "aux": cfg.aux, "test": cfg.test}
    total = sum(want.values())
    order = people[torch.randperm(len(people), generator=g)]
    n_priv = max(1, min(len(people) - 2, round(len(people) * cfg.private / total)))
    n_aux = max(1, min(len(people) - n_priv - 1, round(len(people) * cfg.aux / total)))
    groups = {"private": order[:n_priv], "aux": order[n_priv:n_priv + n_aux], "test": order[n_priv + n_aux:]}
    chosen, sizes = {}, {}
    for split, who in groups.items():
        idx = torch.nonzero(torch.isin(identities, who)).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        if len(idx) < want[split] and cfg.scale != "fit":
            raise InputError(f"dataset {name!r}: splits.{split} ({want[split]}) exceeds the {len(idx)} samples of "
                             f"the {len(who)} identities dealt to it; request fewer, or set splits.scale: fit")
        chosen[split] = idx[: want[split]]
        sizes[split] = len(chosen[split])
    return sizes, torch.cat([chosen["private"], chosen["aux"]]), chosen["test"]


def _spread_targets(identities: torch.Tensor, wanted: int, scale: str, name: str, g: torch.Generator) -> torch.Tensor:
    """Targets for identity data: dealt one clip per person in turn (in random order), never a person's last
    private clip, so each target's identity keeps a clip in the re-identification gallery."""
    order = torch.randperm(len(identities), generator=g)
    seen: dict[int, int] = {}
    turn = torch.empty(len(order), dtype=torch.int64)
    for i, j in enumerate(order.tolist()):
        person = int(identities[j])
        turn[i] = seen.get(person, 0)
        seen[person] = int(turn[i]) + 1
    last = torch.tensor([turn[i] == seen[int(identities[j])] - 1 for i, j in enumerate(order.tolist())])
    eligible = order[~last][torch.argsort(turn[~last], stable=True)]
    if wanted > len(eligible) and scale != "fit":
        raise InputError(f"dataset {name!r}: splits.targets ({wanted}) exceeds the {len(eligible)} private clips "
                         "that leave each person a clip in the re-identification gallery; request fewer, or set "
                         "splits.scale: fit")
    return eligible[:wanted].sort().values


def load_splits(name: str, cfg: SplitConfig, seed: int, options: Mapping[str, Any] | None = None,
                key: bytes | None = None) -> Splits:
    """Load dataset ``name`` and split it with ``seed`` (under the run ``key`` of a submission run, so that a
    sandboxed defense cannot recompute the split or its targets from the seed: :mod:`privbench.core.keys`).

    Sizes larger than the pool raise :class:`InputError` unless ``cfg.scale == "fit"`` (then they are scaled down
    proportionally); the record stores the sizes actually used.
    """
    fn = DATASETS.get(name)
    pool = fn(dict(options or {}))
    check_images(pool.images, f"dataset {name!r}")
    if len(pool.images) == 0:
        raise InputError(f"dataset {name!r} is empty")
    g = torch.Generator().manual_seed(derive_seed(seed, "splits") if key is None else keyed_seed(key, seed, "splits"))
    if pool.fixed_test is not None and pool.identities is not None:
        raise InputError(f"dataset {name!r} has both a fixed test split and identities; identity-disjoint splits "
                         "cannot keep a predefined test split")
    if cfg.fixed_aux and pool.identities is not None:
        raise InputError(f"dataset {name!r} has identities: splits.fixed_aux is not supported with identity-disjoint "
                         "splits")
    if pool.fixed_test is not None:
        train_idx = torch.nonzero(~pool.fixed_test).flatten()
        test_all = torch.nonzero(pool.fixed_test).flatten()
        sizes = _scaled_sizes(name, cfg, len(train_idx), True)
        perm = train_idx[_order(len(train_idx), sizes, cfg.fixed_aux, g)]
        if cfg.test > len(test_all) and cfg.scale != "fit":
            raise InputError(f"dataset {name!r} has {len(test_all)} test images for splits.test ({cfg.test}); "
                             "request fewer, or set splits.scale: fit")
        test_idx = test_all[torch.randperm(len(test_all), generator=g)][: cfg.test]
        sizes["test"] = len(test_idx)
    elif pool.identities is not None:
        sizes, perm, test_idx = _identity_disjoint(name, cfg, pool.identities, g)
    else:
        sizes = _scaled_sizes(name, cfg, len(pool.images), False)
        perm = _order(len(pool.images), sizes, cfg.fixed_aux, g)
        test_idx = perm[sizes["private"] + sizes["aux"]: sizes["private"] + sizes["aux"] + sizes["test"]]
    priv_idx = perm[: sizes["private"]]
    aux_idx = perm[sizes["private"]: sizes["private"] + sizes["aux"]]
    if cfg.targets > len(priv_idx) and cfg.scale != "fit":
        raise InputError(f"dataset {name!r}: splits.targets ({cfg.targets}) exceeds the private split "
                         f"({len(priv_idx)} images); request fewer, or set splits.scale: fit")
    n_targets = min(cfg.targets, len(priv_idx))
    if pool.identities is not None:
        targets = _spread_targets(pool.identities[priv_idx], cfg.targets, cfg.scale, name, g)
    else:
        targets = torch.randperm(len(priv_idx), generator=g)[:n_targets].sort().values
    n_targets = len(targets)
    if pool.identities is not None:  # re-identification galleries hold the private clips that are not targets
        sizes["gallery"] = len(priv_idx) - n_targets
    sizes["targets"] = n_targets

    info = DatasetInfo(
        name=name,
        num_classes=pool.num_classes,
        shape=tuple(pool.images.shape[1:]),
        sizes=sizes,
        hash=pool_hash(pool),
        split_hashes={"private": _index_hash(priv_idx), "aux": _index_hash(aux_idx),
                      "test": _index_hash(test_idx), "targets": _index_hash(targets)},
    )
    return Splits(pool.samples(priv_idx), pool.samples(aux_idx), pool.samples(test_idx), targets, info)
