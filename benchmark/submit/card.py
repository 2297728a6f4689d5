"""What a submitter hands ``privbench submit`` (docs/SUBMITTING.md): the card (:func:`load_card`: a name, authors,
the defenses with their params and claimed numbers, the threat models claimed), the options of the command
(:class:`SubmitOptions`, frozen at the CLI edge) and the maintainers' held-out seeds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from privbench.core.errors import InputError
from privbench.core.threats import ThreatModel
from privbench.core.typed import check_type
from privbench.core.yamlsafe import CARD_MAX_BYTES, load_file
from privbench.submit.protocol import Limits

#: Environment variable naming the maintainers' held-out seed file (same as ``--heldout-seeds``).
HELDOUT_ENV = "PRIVBENCH_HELDOUT_SEEDS"


class AdmissionError(InputError):
    """The submission cannot be evaluated; the message names the defense and what to fix."""


# ---------------------------------------------------------------------------------------------------------------
# The card.


@dataclass(frozen=True)
class Claimed:
    """Numbers the authors claim for one configuration on the submission suite: top-1 ``utility`` and, per threat
    model, the calibrated ``leakage`` advantage."""

    utility: Optional[float] = None
    leakage: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CardDefense:
    id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    claimed: Claimed = field(default_factory=Claimed)


@dataclass(frozen=True)
class Card:
    """``card.yaml``: who, what, and which threat models the defense claims to protect against."""

    name: str
    authors: tuple[str, ...]
    url: str
    defenses: tuple[CardDefense, ...]
    threat_models: tuple[str, ...]

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "submission"


def _need(raw: Mapping[str, Any], key: str, tp: type, where: str) -> Any:
    if key not in raw:
        raise AdmissionError(f"{where}: missing field {key!r}")
    return check_type(raw[key], tp, f"{where}.{key}", AdmissionError)


def _number(value: Any, where: str, lo: float, hi: float) -> float:
    x = check_type(value, float, where, AdmissionError)
    if not lo <= x <= hi:
        raise AdmissionError(f"{where}: expected a number in [{lo}, {hi}], got {value!r}")
    return x


def load_card(path: Path) -> Card:
    """Parse (:mod:`privbench.core.yamlsafe`: plain data, at most 64 KiB) and validate ``card.yaml``; every problem
    names the file and field."""
    path = Path(path)
    if not path.is_file():
        raise AdmissionError(f"card {path}: no such file")
    where = f"card {path}"
    raw = load_file(path, max_bytes=CARD_MAX_BYTES, label=where, error=AdmissionError)
    if not isinstance(raw, Mapping):
        raise AdmissionError(f"{where}: expected a mapping at top level")
    unknown = sorted(set(raw) - {"name", "authors", "url", "defenses", "threat_models"})
    if unknown:
        raise AdmissionError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = _need(raw, "name", str, where).strip()
    if not name:
        raise AdmissionError(f"{where}.name: must not be empty")
    authors = _need(raw, "authors", list, where)
    if not authors or not all(isinstance(a, str) and a.strip() for a in authors):
        raise AdmissionError(f"{where}.authors: expected a non-empty list of names")
    url = _need(raw, "url", str, where)
    threats = _need(raw, "threat_models", list, where)
    known = {t.value for t in ThreatModel}
    for i, t in enumerate(threats):
        if t not in known:
            raise AdmissionError(f"{where}.threat_models[{i}]: {t!r} is not a threat model; known: "
                                 f"{', '.join(sorted(known))}")
    entries = _need(raw, "defenses", list, where)
    if not entries:
        raise AdmissionError(f"{where}.defenses: list at least one defense id to evaluate")
    defenses = []
    for i, e in enumerate(entries):
        w = f"{where}.defenses[{i}]"
        if isinstance(e, str):
            e = {"id": e}
        if not isinstance(e, Mapping):
            raise AdmissionError(f"{w}: expected an id or a mapping with an id")
        extra = sorted(set(e) - {"id", "params", "claimed"})
        if extra:
            raise AdmissionError(f"{w}: unknown field(s) {', '.join(extra)}")
        params = e.get("params") or {}
        if not isinstance(params, Mapping):
            raise AdmissionError(f"{w}.params: expected a mapping")
        c = e.get("claimed") or {}
        if not isinstance(c, Mapping) or set(c) - {"utility", "leakage"}:
            raise AdmissionError(f"{w}.claimed: expected a mapping with 'utility' and/or 'leakage'")
        leakage = c.get("leakage") or {}
        if not isinstance(leakage, Mapping):
            raise AdmissionError(f"{w}.claimed.leakage: expected a mapping threat model -> advantage")
        for t in leakage:
            if t not in known:
                raise AdmissionError(f"{w}.claimed.leakage: {t!r} is not a threat model")
        claimed = Claimed(None if c.get("utility") is None else _number(c["utility"], f"{w}.claimed.utility", 0, 1),
                          {t: _number(v, f"{w}.claimed.leakage.{t}", -1, 1) for t, v in sorted(leakage.items())})
        defenses.append(CardDefense(_need(e, "id", str, w), dict(params), claimed))
    return Card(name, tuple(authors), url, tuple(defenses), tuple(sorted(set(threats))))


# ---------------------------------------------------------------------------------------------------------------
# The submitted source.




def read_heldout_seeds(path: Optional[Path]) -> tuple[int, ...]:
    """Held-out seeds: integers separated by commas, spaces or newlines (``#`` comments allowed)."""
    if path is None:
        return ()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"held-out seed file {path}: no such file")
    text = re.sub(r"#.*", "", path.read_text())
    tokens = [t for t in re.split(r"[\s,]+", text) if t]
    try:
        seeds = tuple(int(t) for t in tokens)
    except ValueError:
        raise InputError(f"held-out seed file {path}: expected integers, got {tokens[:5]}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise InputError(f"held-out seed file {path}: expected distinct non-negative seeds")
    return seeds


# ---------------------------------------------------------------------------------------------------------------
# Admission.




@dataclass(frozen=True)
class SubmitOptions:
    source: Path
    card: Path
    out: Optional[Path] = None  # default: submissions/<card name>
    suite: str = "submission"
    heldout_seeds: Optional[Path] = None
    jobs: int = 1
    device: str = "cpu"
    limits: Limits = Limits()
    progress: bool = True
    plugins: tuple[str, ...] = ()  # --plugin files (attacks or datasets of a custom protocol)
    allow_unconfined: bool = False  # run without Landlock and seccomp (only inside a disposable VM or container)
    sandbox_key: Optional[Path] = None  # the run key (privbench.core.keys); default OUT/.sandbox-key, created once
