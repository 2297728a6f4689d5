"""Records -> pandas frames (the only input of tables and plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ..records import iter_records

#: Main privacy metric of an attack's output, in order of preference, with "higher = leakier".
PRIMARY = (("psnr", "PSNR dB", True), ("top1", "top-1", True), ("auc", "AUC", True))


def primary_metric(privacy: dict[str, Any]) -> Optional[tuple[str, str, float]]:
    for key, label, _ in PRIMARY:
        if privacy.get(key) is not None:
            return key, label, float(privacy[key])
    return None


def load_frame(out_dir: Path) -> pd.DataFrame:
    """One row per record with flattened identifiers and the metrics the reports use."""
    rows = []
    for path, rec in iter_records(Path(out_dir) / "records"):
        m = rec["metrics"]
        prim = primary_metric(m.get("privacy", {})) if rec["status"] == "ok" else None
        strength = rec["defense"].get("strength")
        rows.append({
            "file": path.name,
            "suite": rec["suite"],
            "dataset": rec["dataset"]["name"],
            "defense": rec["defense"]["id"],
            "defense_label": rec["defense"]["label"],
            "strength_name": strength["name"] if strength else "",
            "strength": float(strength["value"]) if strength else float("nan"),
            "attack": rec["attack"]["id"],
            "attack_label": rec["attack"]["label"],
            "seed": rec["seed"],
            "status": rec["status"],
            "reason": rec.get("reason") or "",
            "utility": m.get("utility", {}).get("top1"),
            "drop": m.get("utility", {}).get("drop"),
            "leakage": m.get("leakage"),
            "primary_key": prim[0] if prim else None,
            "primary_label": prim[1] if prim else None,
            "primary": prim[2] if prim else None,
            "chance_top1": m.get("privacy", {}).get("chance_top1"),
            "samples": rec.get("artifacts", {}).get("samples"),
        })
    cols = ["file", "suite", "dataset", "defense", "defense_label", "strength_name", "strength", "attack",
            "attack_label", "seed", "status", "reason", "utility", "drop", "leakage", "primary_key", "primary_label",
            "primary", "chance_top1", "samples"]
    return pd.DataFrame(rows, columns=cols)


def config_name(defense: str, strength_name: str, strength: float) -> str:
    if not strength_name:
        return defense
    value = int(strength) if float(strength).is_integer() else strength
    return f"{defense} {strength_name}={value}"
