"""Records -> pandas frames (the only input of tables and plots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from privbench.core.records import iter_records

#: Main privacy metric of an attack's output, in order of preference, with "higher = leakier".
PRIMARY = (("psnr", "PSNR dB", True), ("top1", "top-1", True), ("membership_auc", "AUC", True))


def primary_metric(privacy: dict[str, Any]) -> Optional[tuple[str, str, float]]:
    for key, label, _ in PRIMARY:
        if privacy.get(key) is not None:
            return key, label, float(privacy[key])
    return None


#: ``metrics.dp`` fields the DP table shows (privbench.run.evaluate: accountants, per person, the audits).
DP_FIELDS = ("epsilon", "delta", "epsilon_pld", "epsilon_rdp", "epsilon_person", "audit_step_epsilon",
             "audit_step_claim", "audit_run_epsilon", "audit_run_claim", "audit_run_ceiling", "audit_violated")


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
            "reference": rec.get("reference", "none"),
            "defense_label": rec["defense"]["label"],
            "strength_name": strength["name"] if strength else "",
            "strength": float(strength["value"]) if strength else float("nan"),
            "attack": rec["attack"]["id"],
            "attack_label": rec["attack"]["label"],
            "attack_params": json.dumps(rec["attack"]["params"], sort_keys=True),
            "defense_params": json.dumps(rec["defense"]["params"], sort_keys=True),
            "seed": rec["seed"],
            "status": rec["status"],
            "reason": rec.get("reason") or "",
            "utility": m.get("utility", {}).get("top1"),
            "drop": m.get("utility", {}).get("drop"),
            "leakage": m.get("leakage"),
            "threat": rec.get("threat_model", {}).get("name"),
            "claims": ",".join(rec["defense"].get("claims", [])),
            "role": rec["defense"].get("role", "defense"),
            "control_bar": rec["attack"].get("control_bar"),
            "recipe_reference": (None if rec["defense"].get("recipe_reference") is None else
                                 json.dumps(rec["defense"]["recipe_reference"], sort_keys=True)),
            "advantage": m.get("calibrated", {}).get("advantage"),
            "advantage_se": m.get("calibrated", {}).get("se"),
            "raw": m.get("calibrated", {}).get("raw"),
            "prior": m.get("calibrated", {}).get("prior"),
            "statistic": rec.get("notes", {}).get("calibrated.statistic"),
            "test_size": m.get("utility", {}).get("test_size"),
            "test_correct": rec.get("answers", {}).get("test_correct"),
            "drop_var": m.get("utility", {}).get("drop_var"),
            "lost": m.get("utility", {}).get("lost"),
            "gained": m.get("utility", {}).get("gained"),
            "pixels": _pixels(rec["dataset"].get("shape")),
            "defense_seconds": m.get("cost", {}).get("defense_seconds"),
            "attack_seconds": m.get("cost", {}).get("attack_seconds"),
            "units": rec.get("artifacts", {}).get("units"),
            "n_units": m.get("calibrated", {}).get("units"),
            "tpr_1pct": m.get("privacy", {}).get("membership_tpr_at_1pct_fpr"),
            "min_fpr": m.get("privacy", {}).get("membership_smallest_resolvable_fpr"),
            "primary_key": prim[0] if prim else None,
            "primary_label": prim[1] if prim else None,
            "primary": prim[2] if prim else None,
            "chance_top1": m.get("privacy", {}).get("chance_top1"),
            "masked_psnr": m.get("privacy", {}).get("masked-psnr"),
            "edge_psnr": m.get("privacy", {}).get("edge-psnr"),
            "bits_per_image": m.get("bitrate", {}).get("bits_per_image"),
            "samples": rec.get("artifacts", {}).get("samples"),
            **{f"dp_{k}": m.get("dp", {}).get(k) for k in DP_FIELDS},
            "dp_per_update": m.get("release", {}).get("epsilon_per_update"),
        })
    cols = ["file", "suite", "dataset", "defense", "reference", "defense_label", "defense_params", "strength_name", "strength",
            "attack", "attack_label", "attack_params", "seed", "status", "reason", "utility", "drop", "leakage", "threat", "claims", "role", "control_bar", "recipe_reference", "advantage", "advantage_se", "raw", "prior", "statistic",
            "test_size", "test_correct", "drop_var", "lost", "gained", "pixels", "defense_seconds", "attack_seconds", "units", "n_units", "tpr_1pct", "min_fpr", "primary_key", "primary_label",
            "primary", "chance_top1", "masked_psnr", "edge_psnr", "bits_per_image", "samples",
            *[f"dp_{k}" for k in DP_FIELDS], "dp_per_update"]
    df = pd.DataFrame(rows, columns=cols)
    df["control_bar"] = pd.to_numeric(df.control_bar, errors="coerce")  # NaN: not one of the attack's controls
    df["attack_name"] = _names(df, "attack", "attack_params")
    df["config"] = _names(df, "defense", "defense_params", always=tuple(df.strength_name.unique()), sep=" ")
    return df


def _pixels(shape: Optional[list[int]]) -> Optional[int]:
    """Pixels per image (H·W) of a ``[C, H, W]`` shape."""
    return int(shape[1] * shape[2]) if shape and len(shape) == 3 else None


def _names(df: pd.DataFrame, id_col: str, params_col: str, always: tuple[str, ...] = (),
           sep: str = "") -> list[str]:
    """Plugin id plus the params that tell its configs apart: ``inpaint-classical[method=ns]`` or, with
    ``sep=" "``, ``masking masked=0.5,masknet=True``. Params named in ``always`` are shown whenever present."""
    names = {}
    for pid, g in df.groupby(id_col):
        configs = {p: json.loads(p) for p in g[params_col].unique()}
        keys = sorted({k for c in configs.values() for k in c
                       if k in always or len({json.dumps(v.get(k)) for v in configs.values()}) > 1})
        for p, c in configs.items():
            shown = [k for k in keys if k in c]
            if not shown:
                names[(pid, p)] = pid
                continue
            body = ",".join(f"{k}={_fmt_value(c[k])}" for k in shown)
            names[(pid, p)] = f"{pid} {body}" if sep else f"{pid}[{body}]"
    return [names[(a, p)] for a, p in zip(df[id_col], df[params_col])]


def _fmt_value(v: object) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
