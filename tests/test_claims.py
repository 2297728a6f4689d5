"""Claim verdicts follow from the CI of a paired difference: a consistent effect is confirmed, its opposite refuted,
and noise around zero inconclusive."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from privbench.report.claims import claim_c3, claim_c4


def _rows(defense: str, params: dict, utilities: list[float], **extra: object) -> list[dict]:
    return [{"dataset": "mnist5k", "defense": defense, "defense_params": json.dumps(params, sort_keys=True),
             "config": f"{defense} {params}", "seed": s, "utility": u, "test_size": 1000, "attack": "linkage",
             "attack_name": "linkage", "threat": "linker", **extra} for s, u in enumerate(utilities)]


def test_masknet_verdicts_follow_the_paired_ci() -> None:
    rng = np.random.default_rng(0)
    base = list(0.80 + rng.normal(0, 0.02, 5))  # seeds differ a lot; the pairing removes it
    rows = (_rows("masking", {"masked": 0.5, "masknet": True}, [u + 0.05 for u in base])
            + _rows("masking", {"masked": 0.5, "masknet": False}, base)
            + _rows("masking", {"masked": 0.8, "masknet": True}, [u - 0.05 for u in base])
            + _rows("masking", {"masked": 0.8, "masknet": False}, base))
    verdicts = {r.statement: r.verdict for r in claim_c4(pd.DataFrame(rows))}
    assert verdicts == {"utility(masknet) − utility(plain) > 0 [masked=0.5]": "confirmed",
                        "utility(masknet) − utility(plain) > 0 [masked=0.8]": "refuted"}
    same = _rows("masking", {"masked": 0.5, "masknet": True}, [u + 0.001 for u in base]) + \
        _rows("masking", {"masked": 0.5, "masknet": False}, base)
    assert [r.verdict for r in claim_c4(pd.DataFrame(same))] == ["inconclusive"]


def _board(vm_advantage: list[float], none_advantage: float) -> pd.DataFrame:
    rows = _rows("visualmixer", {"target_vfe": 0.5}, [0.7] * 5, drop=0.1, reference="none")
    for r, a in zip(rows, vm_advantage):
        r.update(advantage=a, advantage_se=0.01)
    ref = _rows("none", {}, [0.8] * 5, drop=0.0, reference="none", advantage=none_advantage, advantage_se=0.01)
    return pd.DataFrame(rows + ref)


def test_visualmixer_identity_claim_is_refuted_by_a_linker_far_above_its_prior() -> None:
    results = {r.statement.split(" [")[0]: r for r in claim_c3(_board([0.97] * 5, 1.0))}
    assert results["linker advantage − 0.05 < 0"].verdict == "refuted"
    assert results["drop vs none − 5 pp < 0"].verdict == "refuted"  # a 10 pp drop is not "about 2.35 pp"


def test_an_uninformative_release_confirms_a_failing_linker_only_when_the_linker_is_competent() -> None:
    near_zero = [0.004, -0.003, 0.001, 0.0, 0.002]
    ok = {r.statement.split(" [")[0]: r for r in claim_c3(_board(near_zero, 1.0))}
    assert ok["linker advantage − 0.05 < 0"].verdict == "confirmed"
    blind = {r.statement.split(" [")[0]: r for r in claim_c3(_board(near_zero, 0.0))}
    assert blind["linker advantage − 0.05 < 0"].verdict == "inconclusive (attack failed)"


def test_one_seed_without_a_within_seed_variance_decides_nothing() -> None:
    from privbench.core.stats import combine, verdict

    assert verdict(combine([0.01], [0.0])).startswith("inconclusive")  # one seed decides no verdict
