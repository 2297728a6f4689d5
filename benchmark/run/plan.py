"""Plan: a suite becomes jobs (one per dataset × seed × defense config) of cells (one per attack), each with a key
that changes whenever anything that can change its numbers changes (config, code, numeric libraries)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from privbench import __version__
from privbench.core.codehash import closure_hash, library_versions, plugin_hash
from privbench.core.errors import InputError
from privbench.core.hashing import stable_hash
from privbench.core.records import SCHEMA_VERSION
from privbench.core.registry import ATTACKS, DEFENSES
from privbench.core.specs import PluginSpec, SuiteConfig

#: The core modules whose source determines a cell's numbers: evaluation, scoring and what they import.
CORE_MODULES = ("privbench.run.evaluate", "privbench.run.scoring", "privbench.run.prebuild")
#: Where the core hash stops (docs/DESIGN.md, code hashes): the dataset loaders, whose output is hashed as data
#: (content and split hashes are in every config hash), and the run machinery that stores, isolates, loads or
#: describes a cell without deciding its numbers. A plugin's own hash is not cut: it covers what the plugin imports.
NOT_CORE = ("privbench", "privbench.data.*", "privbench.run.config", "privbench.run.cache", "privbench.run.isolation",
            "privbench.run.attack_child", "privbench.run.plugins", "privbench.core.yamlsafe", "privbench.core.typed",
            "privbench.core.records", "privbench.core.codehash", "privbench.core.provenance", "privbench.core.textsafe")


@dataclass(frozen=True)
class Cell:
    dataset: str
    seed: int
    defense: PluginSpec
    attack: PluginSpec

    @property
    def cell_id(self) -> str:
        return f"{self.dataset}/{self.defense.label}/{self.attack.label}/s{self.seed}"

    @property
    def file_name(self) -> str:
        return f"{self.dataset}__{self.defense.label}__{self.attack.label}__s{self.seed}.json"


@dataclass(frozen=True)
class Job:
    """The cells sharing one release: the defense is built once, its utility measured once."""

    dataset: str
    seed: int
    defense: PluginSpec
    attacks: tuple[PluginSpec, ...]

    def cells(self) -> list[Cell]:
        return [Cell(self.dataset, self.seed, self.defense, a) for a in self.attacks]


def plan(suite: SuiteConfig) -> list[Job]:
    """All jobs of the suite; the reference defense first within each (dataset, seed), so its utility is cached
    before the others need it. A positive-control defense's job holds only the attacks it is a control of."""
    jobs = [Job(d, s, dspec, tuple(a for a in suite.attacks if a.defenses is None or dspec.id in a.defenses
                                   if _pairs(dspec, a)))
            for d in suite.datasets for s in suite.seeds for dspec in suite.defenses
            if dspec.datasets is None or d in dspec.datasets]
    for dspec in suite.defenses:
        if DEFENSES.get(dspec.id).control and not any(j.attacks for j in jobs if j.defense == dspec):
            named = sorted(a for a, acls in ATTACKS.items() if dspec.id in acls.positive_controls)
            raise InputError(f"suite {suite.name!r}: defense {dspec.id!r} is a positive control, run only against "
                             f"the attacks that name it ({', '.join(named) or 'none'}), and the suite has none "
                             "of them; add one or remove the control")
    jobs = [j for j in jobs if j.attacks]
    return sorted(jobs, key=lambda j: (j.dataset, j.seed, j.defense.id != suite.reference))


def _pairs(defense: PluginSpec, attack: PluginSpec) -> bool:
    """A positive control (``defenses/controls.py``) is run only against the attacks that name it; every other
    defense against every attack of the suite."""
    if not DEFENSES.get(defense.id).control:
        return True
    return defense.id in ATTACKS.get(attack.id).positive_controls


def code_versions(defense_id: str, attack_id: str, reference_id: str = "none") -> dict[str, str]:
    """Hashes of the code that produces a cell: the defense's, the attack's and the reference defense's import
    closures, the core's evaluation and scoring code, and the versions of the libraries that change numbers."""
    return {"defense": plugin_hash(DEFENSES.get(defense_id)), "attack": plugin_hash(ATTACKS.get(attack_id)),
            "reference": plugin_hash(DEFENSES.get(reference_id)), "core": core_hash(),
            "libraries": stable_hash(library_versions())[:16]}


def core_hash() -> str:
    """Hash of the code that decides every cell's numbers: :data:`CORE_MODULES`' closure cut at :data:`NOT_CORE`."""
    return closure_hash(*CORE_MODULES, opaque=NOT_CORE)


def config_hash(suite: SuiteConfig, cell: Cell, data: dict[str, Any], run: dict[str, Any]) -> str:
    """Hash of the cell's configuration (no code): the suite's settings for it, the content and split hashes of its
    data (``data``), and the run options that change numbers (``run``: device, LPIPS)."""
    return stable_hash({"data": data, "run": run,
        "schema_version": SCHEMA_VERSION, "privbench": __version__, "suite": suite.name, "dataset": cell.dataset,
        "dataset_options": dict(suite.dataset_options.get(cell.dataset, {})),
        "splits": dataclasses.asdict(suite.splits), "task": dataclasses.asdict(suite.task), "seed": cell.seed,
        "reference": suite.reference,
        "defense": [cell.defense.id, cell.defense.params_dict], "attack": [cell.attack.id, cell.attack.params_dict],
    })


def cell_key(config: str, code: dict[str, Any]) -> str:
    """The key a finished record must carry to be reused: configuration and code together."""
    return stable_hash({"config": config, "code": code})
