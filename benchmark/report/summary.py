"""A plain-data summary of a run's records: per defense config, the gated cells of the main table as JSON, for a
submission entry (:func:`config_summaries`)."""

from __future__ import annotations

import json
from typing import Any, Optional

import pandas as pd

from privbench.core.stats import Interval
from privbench.report.intervals import (
    competence,
    utility_interval,
)
from privbench.report.tables import board_threats, config_groups, threat_cell


def _interval_dict(i: Optional[Interval]) -> Optional[dict[str, Any]]:
    return None if i is None else i.to_json()


def config_summaries(df: pd.DataFrame) -> list[dict]:
    """Plain-data summary of every (dataset, defense config) of a run (``privbench submit``'s ``submission.json``):
    utility and drop with their CIs, and per threat model the gated leakage cell as the main table shows it
    (``status``: ok / attack failed / not claimed / not applicable, the strongest competent attack, its CI)."""
    ok = df[df.status == "ok"]
    comp = competence(ok)
    out = []
    for dataset, d in ok.groupby("dataset", sort=True):
        threats = board_threats(d)
        for (defense, config, params), g in config_groups(d):
            is_ref = defense == g.reference.iloc[0]
            leakage = {}
            for t in threats:
                cell = threat_cell(g[g.threat == t.value], dataset, comp,
                                    claimed=is_ref or t.value in g.claims.iloc[0].split(","))
                leakage[t.value] = {"status": cell.status.value, "title": cell.title,
                                    "interval": _interval_dict(cell.estimate)}
            out.append({"dataset": dataset, "defense": defense, "config": config, "params": json.loads(params),
                        "reference": bool(is_ref), "seeds": sorted(int(s) for s in g.seed.unique()),
                        "utility": _interval_dict(utility_interval(g)),
                        "drop": None if is_ref else _interval_dict(utility_interval(g, "drop")),
                        "leakage": leakage})
    return out
