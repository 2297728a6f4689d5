"""Records: one JSON object per (dataset, defense config, attack, seed) cell, schema v3 (docs/DESIGN.md, Records).

Records are validated on write and on read, and written atomically (temp file, fsync, rename), so a killed run
leaves either the whole record or none.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

from privbench.core.atomic import atomic_write_text
from privbench.core.errors import InputError

SCHEMA_VERSION = 3
STATUSES = ("ok", "skipped", "failed")
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "suite": str, "cell_id": str, "dataset": dict, "defense": dict, "attack": dict,
    "seed": int, "threat_model": dict, "status": str, "metrics": dict, "provenance": dict,
}


def _check_numbers(obj: Any, where: str) -> None:
    """Metrics hold finite numbers, null, or mappings/lists of them; strings and NaN/inf are rejected."""
    if isinstance(obj, str):
        raise InputError(f"{where}: metrics must be numbers or null, got string {obj!r}")
    if isinstance(obj, float) and not math.isfinite(obj):
        raise InputError(f"{where}: non-finite number {obj!r} (store null for unavailable values)")
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _check_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_numbers(v, f"{where}[{i}]")


def validate(record: Mapping[str, Any], where: str = "record") -> None:
    """Raise :class:`InputError` naming the field unless ``record`` follows the current schema."""
    if not isinstance(record, Mapping):
        raise InputError(f"{where}: expected a JSON object")
    for key, tp in _REQUIRED.items():
        if key not in record:
            raise InputError(f"{where}: missing field {key!r}")
        if not isinstance(record[key], tp) or (tp is int and isinstance(record[key], bool)):
            raise InputError(f"{where}.{key}: expected {getattr(tp, '__name__', tp)}, got {type(record[key]).__name__}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise InputError(f"{where}.schema_version: {record['schema_version']} (this privbench reads {SCHEMA_VERSION})")
    if record["status"] not in STATUSES:
        raise InputError(f"{where}.status: {record['status']!r} not one of {STATUSES}")
    if record["status"] != "ok" and not record.get("reason"):
        raise InputError(f"{where}.reason: a {record['status']} record must give its reason")
    for key in ("id", "params"):
        for part in ("defense", "attack"):
            if key not in record[part]:
                raise InputError(f"{where}.{part}: missing {key!r}")
    for key in ("name", "hash", "sizes"):
        if key not in record["dataset"]:
            raise InputError(f"{where}.dataset: missing {key!r}")
    for key in ("privbench_version", "git_commit", "config_hash", "cell_key", "code", "libraries", "device",
                "machine"):
        if key not in record["provenance"]:
            raise InputError(f"{where}.provenance: missing {key!r}")
    _check_numbers(record["metrics"], f"{where}.metrics")
    if record["status"] == "ok":
        if "name" not in record["threat_model"]:
            raise InputError(f"{where}.threat_model: missing 'name'")
        cal = record["metrics"].get("calibrated")
        if not isinstance(cal, Mapping):
            raise InputError(f"{where}.metrics: missing 'calibrated' (raw score, prior, advantage)")
        for key in ("raw", "prior", "ideal", "advantage", "se", "units"):
            if not isinstance(cal.get(key), (int, float)):
                raise InputError(f"{where}.metrics.calibrated: missing number {key!r}")


def dumps(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    validate(record, str(path))
    atomic_write_text(path, dumps(record))


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such record") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    validate(record, str(path))
    return record


def iter_records(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """All records in ``directory`` (sorted by file name), validated."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no records directory")
    for path in sorted(directory.glob("*.json")):
        yield path, read_record(path)
