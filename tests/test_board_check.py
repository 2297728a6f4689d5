"""``report --check`` fails a board whose reference is not its strongest baseline (issue 29)."""

from __future__ import annotations

import pandas as pd

from privbench.report.intervals import utility_above_reference


def _rows(defense: str, drops: list[float]) -> list[dict]:
    return [{"dataset": "mnist5k", "defense": defense, "config": defense, "reference": "none", "role": "defense",
             "seed": s, "utility": 0.9 + (-d), "drop": d, "test_size": 1000, "drop_var": 1e-5}
            for s, d in enumerate(drops)]


def test_a_defense_beating_the_reference_beyond_its_ci_is_a_problem() -> None:
    ok = pd.DataFrame(_rows("none", [0.0] * 5) + _rows("blur", [-0.04, -0.035, -0.045, -0.04, -0.038])
                      + _rows("pixelate", [0.01, -0.005, 0.0, 0.004, -0.002]))
    problems = utility_above_reference(ok)
    assert len(problems) == 1 and problems[0].startswith("mnist5k blur: utility above the reference's by 0.040")
