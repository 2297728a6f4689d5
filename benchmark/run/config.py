"""Suite configuration: YAML at the CLI edge, frozen dataclasses everywhere else.

A suite file looks like::

    name: quick
    datasets: [mnist5k]
    seeds: [0]
    splits: {private: 1500, aux: 1500, test: 1000, targets: 100}
    task: {model: convnet, epochs: 3}
    defenses:
      - id: none
      - id: blur
        sweep: {sigma: [1.0, 2.0, 4.0]}
    attacks:
      - id: inversion-decoder
        params: {epochs: 8}
      - id: linkage
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping

from privbench.core.contracts import TaskConfig
from privbench.core.errors import InputError
from privbench.core.paths import package_dir
from privbench.core.registry import ATTACKS, DATASETS, DEFENSES
from privbench.core.specs import PluginSpec, SplitConfig, SuiteConfig
from privbench.core.typed import build_dataclass, check_type
from privbench.core.yamlsafe import SUITE_MAX_BYTES, load_file

#: Where the built-in suites live (package data: ``benchmark/suites/*.yaml``).
SUITES_DIR = package_dir() / "suites"


def _plugin_specs(entries: Any, registry: Any, where: str, allow_sweep: bool) -> list[PluginSpec]:
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{where}: expected a non-empty list")
    specs: list[PluginSpec] = []
    for i, entry in enumerate(entries):
        w = f"{where}[{i}]"
        if isinstance(entry, str):
            entry = {"id": entry}
        if not isinstance(entry, Mapping) or "id" not in entry:
            raise InputError(f"{w}: expected a mapping with an 'id'")
        extra = sorted(set(entry) - {"id", "params", "sweep", "datasets", "defenses"})
        if extra:
            raise InputError(f"{w}: unknown key(s) {', '.join(extra)}")
        try:
            cls = registry.get(entry["id"])
        except InputError as e:
            raise InputError(f"{w}.id: {e}") from None
        base = dict(entry.get("params") or {})
        sweep = entry.get("sweep") or {}
        if sweep and not allow_sweep:
            raise InputError(f"{w}.sweep: sweeps are only allowed for defenses")
        if not isinstance(sweep, Mapping) or not all(isinstance(v, list) and v for v in sweep.values()):
            raise InputError(f"{w}.sweep: expected a mapping of field -> non-empty list")
        only = entry.get("datasets")
        if only is not None:
            if not allow_sweep:
                raise InputError(f"{w}.datasets: only defenses can be restricted to datasets")
            only = check_type(only, tuple[str, ...], f"{w}.datasets")
        for_defenses = entry.get("defenses")
        if for_defenses is not None:
            if allow_sweep:
                raise InputError(f"{w}.defenses: only attacks can be restricted to defenses")
            for_defenses = check_type(for_defenses, tuple[str, ...], f"{w}.defenses")
        keys = list(sweep)
        for combo in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
            params = dict(base, **dict(zip(keys, combo)))
            specs.append(PluginSpec(entry["id"], build_dataclass(cls.Params, params, f"{w}.params"), only,
                                    for_defenses))
    return specs


def load_suite(source: str | Path, search_dirs: tuple[Path, ...] = ()) -> SuiteConfig:
    """Load a suite by file path or by name (``quick`` -> ``benchmark/suites/quick.yaml``); the YAML is parsed
    by :mod:`privbench.core.yamlsafe` (plain data, at most 1 MiB)."""

    path = Path(source)
    if not path.suffix:
        for d in search_dirs + (SUITES_DIR,):
            cand = d / f"{source}.yaml"
            if cand.is_file():
                path = cand
                break
    if not path.is_file():
        raise InputError(f"suite {source!r}: no such file (give a YAML path or a built-in suite name)")
    raw = load_file(path, max_bytes=SUITE_MAX_BYTES)
    if not isinstance(raw, Mapping):
        raise InputError(f"{path}: expected a mapping at top level")
    allowed = {"name", "datasets", "seeds", "defenses", "attacks", "splits", "task", "dataset_options", "reference"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}")
    datasets = raw.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InputError(f"{path}: datasets: expected a non-empty list")
    for i, d in enumerate(datasets):
        if not isinstance(d, str):
            raise InputError(f"{path}: datasets[{i}]: expected a string")
        try:
            DATASETS.get(d)
        except InputError as e:
            raise InputError(f"{path}: datasets[{i}]: {e}") from None
    seeds = check_type(raw.get("seeds", [0]), tuple[int, ...], f"{path}: seeds")
    defenses = tuple(_plugin_specs(raw.get("defenses"), DEFENSES, f"{path}: defenses", True))
    for i, spec in enumerate(defenses):
        for d in spec.datasets or ():
            if d not in datasets:
                raise InputError(f"{path}: defenses: {spec.id} is restricted to dataset {d!r}, "
                                 f"which the suite does not list")
    attacks = tuple(_plugin_specs(raw.get("attacks"), ATTACKS, f"{path}: attacks", False))
    ids = {spec.id for spec in defenses}
    for spec in attacks:
        for d in spec.defenses or ():
            if d not in ids:
                raise InputError(f"{path}: attacks: {spec.id} is restricted to defense {d!r}, which the suite does "
                                 "not list")
    opts = raw.get("dataset_options") or {}
    if not isinstance(opts, Mapping):
        raise InputError(f"{path}: dataset_options: expected a mapping")
    return SuiteConfig(
        name=check_type(raw.get("name", path.stem), str, f"{path}: name"),
        datasets=tuple(datasets),
        seeds=seeds,
        defenses=defenses,
        attacks=attacks,
        splits=build_dataclass(SplitConfig, raw.get("splits"), f"{path}: splits"),
        task=build_dataclass(TaskConfig, raw.get("task"), f"{path}: task"),
        dataset_options={k: dict(v) for k, v in opts.items()},
        reference=_reference(raw.get("reference", "none"), defenses, path),
    )


def _reference(ref: Any, defenses: tuple[PluginSpec, ...], path: Path) -> str:
    ref = check_type(ref, str, f"{path}: reference")
    try:
        DEFENSES.get(ref)
    except InputError as e:
        raise InputError(f"{path}: reference: {e}") from None
    return ref
