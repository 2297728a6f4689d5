"""Statistics of a board's cells, from records: per-seed values, intervals of advantage and utility (paired where
the data are), and the competence gate of each attack (it must beat its prior on the reference defense and pass its
positive controls). Used by the tables (:mod:`.tables`) and the claims (:mod:`.claims`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from privbench.core.stats import Interval, combine, paired_variance, proportion_variance, unpack_correct


def _per_seed(g: pd.DataFrame, *columns: str) -> tuple[np.ndarray, ...]:
    """The first row of each seed (seeds sorted) where ``columns[0]`` is present, as float arrays per column."""
    first = g[columns[0]].to_numpy(float)
    keep = ~np.isnan(first)
    seeds = g.seed.to_numpy()[keep]
    _, idx = np.unique(seeds, return_index=True)
    return tuple(g[c].to_numpy(float)[keep][idx] for c in columns)


def advantage_interval(g: pd.DataFrame, level: float = 0.95, shift: float = 0.0) -> Optional[Interval]:
    """Calibrated advantage (minus ``shift``) of one (defense config, attack) over its seeds."""
    adv, se = _per_seed(g, "advantage", "advantage_se")
    if not len(adv):
        return None
    return combine(adv - shift, se ** 2, level)


def tpr_interval(per: pd.DataFrame) -> Optional[Interval]:
    """Membership TPR at 1% FPR over seeds (``per``: one row per seed), with a binomial within-seed variance over the
    members (half the candidates); ``None`` where 1% is below the smallest resolvable FPR."""
    per = per.dropna(subset=["tpr_1pct", "n_units"])
    if per.empty:
        return None
    tpr = per.tpr_1pct.to_numpy(float)
    members = np.maximum(1, per.n_units.to_numpy(float) // 2).astype(int)
    return combine(tpr, [proportion_variance(p, k) for p, k in zip(tpr, members)])


def answers(g: pd.DataFrame, seed: int) -> Optional[np.ndarray]:
    """The utility model's per-test-sample answers of ``g``'s config on ``seed`` (``None`` if not recorded)."""
    rows = g[(g.seed == seed) & g.test_correct.notna()] if "test_correct" in g else g.iloc[:0]
    if rows.empty:
        return None
    return unpack_correct(rows.test_correct.iloc[0], int(rows.test_size.iloc[0]))


def paired_interval(a: pd.DataFrame, b: pd.DataFrame, column: str, binomial: bool = False) -> Optional[Interval]:
    """``a - b`` of ``column`` on the seeds both ran (same splits). Accuracies (``binomial``): the within-seed
    variance of the paired difference on the same test samples where both configs' answers are recorded
    (:func:`~privbench.core.stats.paired_variance`), else the sum of the two binomial variances (independent, wider);
    other columns: unknown (NaN: the interval rests on the spread across seeds, unbounded with one seed)."""
    x = a.dropna(subset=[column]).groupby("seed")[column].mean()
    y = b.dropna(subset=[column]).groupby("seed")[column].mean()
    seeds = sorted(set(x.index) & set(y.index))
    if not seeds:
        return None
    x, y = x.loc[seeds].to_numpy(float), y.loc[seeds].to_numpy(float)
    var = np.full(len(seeds), np.nan)
    if binomial:
        n = a.groupby("seed").test_size.first().loc[seeds].to_numpy(int)
        var = np.array([proportion_variance(p, k) + proportion_variance(q, k) for p, q, k in zip(x, y, n)])
        for i, seed in enumerate(seeds):
            ra, rb = answers(a, seed), answers(b, seed)
            if ra is not None and rb is not None and len(ra) == len(rb):
                var[i] = paired_variance(ra, rb)
    return combine(x - y, var)


def recipe_drop_interval(g: pd.DataFrame, ok: pd.DataFrame) -> Optional[Interval]:
    """Utility of the same defense at its recipe reference (e.g. DP-SGD at σ = 0) minus this config's, paired by
    seed; ``None`` when the config has no recipe reference or the suite did not run it."""
    ref_params = g.recipe_reference.dropna()
    if ref_params.empty:
        return None
    ref = ok[(ok.defense == g.defense.iloc[0]) & (ok.defense_params == ref_params.iloc[0])]
    return paired_interval(ref, g, "utility", binomial=True)


def utility_interval(g: pd.DataFrame, column: str = "utility", shift: float = 0.0) -> Optional[Interval]:
    """Test accuracy over seeds (binomial within-seed variance); ``column="drop"``: reference minus defense.
    ``shift`` is subtracted from every seed's value (e.g. a claimed tolerance)."""
    g = g if "drop_var" in g else g.assign(drop_var=np.nan)  # frames built by hand may lack the paired column
    needed = list(dict.fromkeys([column, "utility", "drop", "test_size", "drop_var"]))
    per = g.dropna(subset=[column]).groupby("seed")[needed].first()
    if per.empty or per.test_size.isna().any():
        return None
    n = per.test_size.to_numpy(int)
    u = per.utility.to_numpy(float)
    var = np.array([proportion_variance(p, k) for p, k in zip(u, n)])
    if column == "drop":  # paired on the same test samples where recorded (drop_var), else independent
        ref = (per["drop"] + per["utility"]).to_numpy(float)
        independent = var + np.array([proportion_variance(p, k) for p, k in zip(ref, n)])
        paired = per.drop_var.to_numpy(float)
        var = np.where(np.isnan(paired), independent, paired)
    return combine(per[column].to_numpy(float) - shift, var)


@dataclass(frozen=True)
class ControlResult:
    """An attack's advantage on one of its positive controls (``defenses/controls.py``) and the bar it must clear:
    passed when the CI's lower bound reaches the bar."""

    config: str
    bar: float
    interval: Optional[Interval]

    @property
    def passed(self) -> bool:
        return self.interval is not None and self.interval.lo >= self.bar


@dataclass(frozen=True)
class Competence:
    """An attack's advantage where its competence is judged, whether it beats its prior there (CI above 0), and
    its positive controls.

    ``basis``: the defense config the fallback rule judges it on: the reference defense, or, for an attack the
    reference does not expose surfaces for (e.g. mask attacks), the config where the attack does best, its CI
    widened for the choice among k configs (Bonferroni, level 1 − 0.05/k). ``controls``: the attack's
    positive-control cells in the records.

    Competent: every positive control run is passed, where any was run (the informative test: beating the prior on
    ``none`` is trivial for a decoder and impossible for a GAN attack on a ConvNet, whose ≈ 0 there is then a
    measurement); otherwise, beating the prior on the basis (CI above 0).
    """

    interval: Optional[Interval]
    basis: str = ""
    controls: tuple[ControlResult, ...] = ()

    @property
    def competent(self) -> bool:
        if self.controls:
            return all(c.passed for c in self.controls)
        return self.interval is not None and self.interval.lo > 0.0


def ranked(ok: pd.DataFrame) -> pd.DataFrame:
    """The rows of defenses that are ranked: every defense but the positive controls."""
    return ok[ok.role != "control"] if "role" in ok else ok


def competence(ok: pd.DataFrame) -> dict[tuple[str, str], Competence]:
    """``(dataset, attack name) -> Competence`` measured on each dataset's reference defense (or, where the attack
    does not apply to it, on the ranked config where its CI's lower bound is highest), with the attack's
    positive-control cells (rows with a ``control_bar``)."""
    out = {}
    for (dataset, attack), g in ok.groupby(["dataset", "attack_name"], sort=True):
        marked = g[g.control_bar.notna()] if "control_bar" in g else g.iloc[:0]
        controls = tuple(ControlResult(config, float(h.control_bar.iloc[0]), advantage_interval(h))
                         for config, h in marked.groupby("config", sort=True))
        g = ranked(g)
        ref = g[g.defense == g.reference]
        if len(ref):
            out[(dataset, attack)] = Competence(advantage_interval(ref), ref.config.iloc[0], controls)
            continue
        configs = list(g.groupby("config", sort=True))
        level = 1 - 0.05 / max(1, len(configs))  # Bonferroni: the best of k configs is picked with the truth
        per = [(i, h.config.iloc[0]) for _, h in configs if (i := advantage_interval(h, level)) is not None]
        best = max(per, key=lambda x: (x[0].lo, x[1]), default=(None, ""))
        out[(dataset, attack)] = Competence(best[0], f"{best[1]} (reference not applicable)" if best[1] else "",
                                            controls)
    return out


def utility_above_reference(ok: pd.DataFrame) -> list[str]:
    """Every ranked defense config whose utility exceeds its reference's: the one-sided test that the paired drop is
    below 0, Holm-adjusted over the board's configs, at 0.05; the reference is then not the strongest baseline of the
    board (issue 29), one line per config."""
    from privbench.core.stats import holm, p_value

    found = []
    ranked_rows = ranked(ok)
    for (dataset, config), g in ranked_rows[ranked_rows.defense != ranked_rows.reference].groupby(
            ["dataset", "config"], sort=True):
        if g["drop"].isna().any():
            continue
        i = utility_interval(g, "drop")
        if i is not None and i.seeds >= 2:
            found.append((dataset, config, i, p_value(i, claimed_positive=False)))
    adjusted = holm([f[3] for f in found]) if found else []  # one family: the board's configs
    return [f"{dataset} {config}: utility above the reference's by {-i.mean:.3f} (drop CI [{i.lo:.3f}, {i.hi:.3f}], "
            f"Holm-adjusted p {p:.3g})" for (dataset, config, i, _), p in zip(found, adjusted) if p < 0.05]
