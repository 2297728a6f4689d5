"""A submission's claimed numbers against what was measured (docs/SUBMITTING.md, step 5): each claim of the card
is compared with the measured CI (optimistic when the CI excludes it on the wrong side), and a self-reported ε is
audited in one more sandboxed build (:mod:`privbench.ops.onerun`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional

from privbench.core.stats import Interval
from privbench.submit.admission import card_specs
from privbench.submit.card import Card


def check_claims(card: Card, full_params: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claimed number against the measured 95% CI of its configuration (public seeds).

    ``outside``: the claim lies outside the CI. ``optimistic``: outside on the side that flatters the defense
    (utility above the CI, leakage below it); those make the entry ``unreliable``. A claim with nothing measured
    to check it against (no attack of its threat model ran, no utility, no finished cell) has ``measured`` and
    ``outside`` ``None`` and a note saying "not measured"."""
    out = []
    for d, params in zip(card.defenses, full_params):  # noqa: B905 - one spec per card entry
        rows = [r for r in summary if r["defense"] == d.id and r["params"] == params]
        if not rows:  # every cell of the configuration failed
            claimed = ({"utility": d.claimed.utility} if d.claimed.utility is not None else {}) | \
                {f"leakage:{t}": v for t, v in d.claimed.leakage.items()}
            where = {"defense": d.id, "config": None, "dataset": None}
            out += [_unmeasured(q, v, where, "no cell of this configuration finished") for q, v in claimed.items()]
        for r in rows:
            if d.claimed.utility is not None:
                u = r["utility"]
                out.append(_unmeasured("utility", d.claimed.utility, r, "no utility was measured") if u is None
                           else _claim("utility", None, d.claimed.utility, u, r, optimistic=d.claimed.utility > Interval.from_json(u).hi))
            for t, v in d.claimed.leakage.items():
                cell = r["leakage"].get(t)
                interval = None if cell is None else cell["interval"]
                if interval is None:
                    out.append(_unmeasured(f"leakage:{t}", v, r, "no attack of this threat model ran"))
                    continue
                out.append(_claim(f"leakage:{t}", cell["status"], v, interval, r, optimistic=v < Interval.from_json(interval).lo))
    return out


def _self_reported(records: Path) -> dict[tuple[str, str, str], tuple[float, Optional[float], int]]:
    """``(defense id, params JSON, dataset) -> (ε, δ, seed)`` of every configuration whose ok records self-report an
    ε, from its first public seed."""
    from privbench.core.records import iter_records

    reported: dict[tuple[str, str, str], tuple[float, Optional[float], int]] = {}
    for _, r in sorted(iter_records(records), key=lambda pr: str(pr[0])):
        rel = r.get("metrics", {}).get("release", {}) if r["status"] == "ok" else {}
        if rel.get("self_reported_epsilon") is not None:
            key = (r["defense"]["id"], json.dumps(r["defense"]["params"], sort_keys=True), r["dataset"]["name"])
            seed = int(r["seed"])
            if key not in reported or seed < reported[key][2]:
                d = rel.get("self_reported_delta")
                reported[key] = (float(rel["self_reported_epsilon"]), None if d is None else float(d), seed)
    return reported


def audit_self_reported(suite: Any, card: Card, out: Path, proxy: Path, summary: list[dict[str, Any]],
                        device: str) -> list[dict[str, Any]]:
    """The black-box one-run audit (``privbench.ops.onerun.one_run_blackbox``) of every configuration whose public
    records self-report an ε: one more sandboxed build on the first public seed, with test samples written over
    secret private slots as canaries (seeded by the secret run key), scored on what it releases. Claim rows for
    ``check_claims``' list; each makes the entry ``unreliable`` (``optimistic``) when the audited lower bound
    exceeds the claim, when δ exceeds 1/N (no meaningful DP claim), or when the audit cannot run (a stated ε the
    benchmark cannot check is not shown as one). The K audits share a 5% error rate (each at 1 − 0.05/K). Runs
    under the public run key."""
    import torch

    from privbench.core.contracts import RunContext
    from privbench.core.keys import keyed_seed, run_key
    from privbench.core.registry import DEFENSES
    from privbench.core.textsafe import one_line
    from privbench.data import load_splits
    from privbench.ops.onerun import one_run_blackbox
    from privbench.run.plugins import load_plugins

    reported = _self_reported(out / "public" / "records")
    rows: list[dict[str, Any]] = []
    if not reported:
        return rows
    if any(k[0] not in DEFENSES for k in reported):
        load_plugins((str(proxy.resolve()),))
    specs = {(spec.id, json.dumps(json.loads(json.dumps(spec.params_dict)), sort_keys=True)): spec
             for spec in card_specs(suite, card)}
    key = run_key()
    assert key is not None, "audit_self_reported runs under the submission's run key"
    level = 1 - 0.05 / len(reported)
    for (did, params, dataset), (eps, delta, seed) in sorted(reported.items()):
        spec = specs.get((did, params))
        if spec is None:
            continue
        row = next((r for r in summary if r["defense"] == did and r["dataset"] == dataset
                    and json.dumps(r["params"], sort_keys=True) == params), None)
        where = {"defense": did, "config": None if row is None else row["config"], "dataset": dataset,
                 "quantity": "epsilon (self-reported)", "claimed": eps, "status": "ok"}
        splits = load_splits(dataset, suite.splits, seed, dict(suite.dataset_options.get(dataset, {})), key)
        n = len(splits.private)
        if delta is None or not 0 <= delta <= 1 / n or not eps >= 0:
            rows.append({**where, "measured": None, "outside": True,
                         "optimistic": True, "note": f"δ = {delta} is not at most 1/N = {1 / n:.2g}: not a "
                                                     "meaningful DP claim, so it is not shown as one"})
            continue
        defense = DEFENSES.get(did)(spec.params)
        ctx = RunContext(seed=seed, device=torch.device(device), task=suite.task)
        try:
            result = one_run_blackbox(lambda s: defense.build(s, ctx), splits, eps, delta,
                                      seed=keyed_seed(key, "dp-audit", did, params, dataset), confidence=level)
        except Exception as e:  # noqa: BLE001 - a refused or crashed audit build must not leave the claim standing
            rows.append({**where, "measured": None, "outside": True,
                         "optimistic": True, "note": "the DP audit could not run, so the claim is not shown as one "
                                                     f"({type(e).__name__}: {one_line(str(e))[:300]})"})
            continue
        lower = result.epsilon_lower
        if result.violated:
            note = "refuted by the black-box one-run DP audit"
        elif result.details["vacuous"]:
            note = (f"unverified: the claim ({result.claimed:.3f} for one sample replaced) is above the "
                    f"{result.details['ceiling']:.3f} this audit can ever show")
        else:
            note = (f"unverified: not refuted (audited lower bound {lower:.3f} for one sample replaced, against "
                    f"{result.claimed:.3f}); a black-box audit cannot verify a claim")
        rows.append({**where, "measured": Interval(lower, lower, math.inf, 0).to_json(),
                     "outside": result.violated, "optimistic": result.violated, "note": note,
                     "audit": result.as_dict()})
    return rows


def _unmeasured(quantity: str, claimed: float, row: Mapping[str, Any], why: str) -> dict[str, Any]:
    return {"defense": row["defense"], "config": row["config"], "dataset": row["dataset"], "quantity": quantity,
            "claimed": claimed, "measured": None, "status": None, "outside": None, "optimistic": False,
            "note": f"not measured ({why})"}


def _claim(quantity: str, status: Optional[str], claimed: float, interval: Mapping[str, Any],
           row: Mapping[str, Any], optimistic: bool) -> dict[str, Any]:
    i = Interval.from_json(interval)
    outside = not i.lo <= claimed <= i.hi
    return {"defense": row["defense"], "config": row["config"], "dataset": row["dataset"], "quantity": quantity,
            "claimed": claimed, "measured": dict(interval), "status": status, "outside": outside,
            "optimistic": bool(outside and optimistic),
            "note": "" if not outside else ("overclaims" if optimistic else "conservative")}
