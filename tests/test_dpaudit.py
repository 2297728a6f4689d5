"""The empirical DP audits (privbench.ops.dpaudit): their statistics agree with independent implementations and the
paper's printed numbers, they catch the positive controls (tests/dp_controls.py) with the confidence interval
excluding the claim, and they never flag the correct mechanisms at the same settings."""

from __future__ import annotations

import math

import pytest
import torch
from dp_controls import RewoundNoiseDPSGDStep, SameBatchMaskDPStep, UnclippedDPSGDStep
from scipy.stats import binomtest

from privbench.core.errors import InputError
from privbench.core.images import ImageSet
from privbench.core.release import StepData
from privbench.defenses.dp_sgd import DPSGDStep
from privbench.defenses.maskdp import FILL, MaskDPStep
from privbench.ops import accounting, canaries, dpaudit, onerun

SHAPE = (2, 3, 8, 8)  # two-frame 3×8×8 clips
DELTA = 1e-5


@pytest.mark.parametrize("k,n", [(0, 50), (3, 50), (25, 50), (50, 50), (7, 15_000)])
def test_clopper_pearson_agrees_with_scipy_exact_interval(k, n) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
    lo, hi = canaries.clopper_pearson(k, n, 0.1)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


def test_one_run_bound_reproduces_the_papers_numbers() -> None:
    """Steinke, Nasr & Jagielski 2023, Appendix D (m = 1000, r = 100, v = 75, δ = 1e-4: 0.673) and §7 (m = 1e5,
    r = 1510, v = 1439, δ = 1e-5: 2.675); without δ the bound is the pure-DP Binomial tail's."""
    assert onerun.one_run_epsilon(1000, 100, 75, 1e-4, 0.95) == pytest.approx(0.673, abs=1e-3)
    assert onerun.one_run_epsilon(100_000, 1510, 1439, 1e-5, 0.95) == pytest.approx(2.675, abs=1e-3)
    assert onerun.one_run_epsilon(1000, 100, 75, 0.0, 0.95) == pytest.approx(0.702, abs=1e-3)
    assert onerun.one_run_epsilon(1000, 100, 50, 1e-5, 0.95) == 0.0  # chance: nothing shown
    with pytest.raises(InputError, match="correct <= guesses"):
        onerun.one_run_epsilon(10, 20, 5, 1e-5, 0.95)


def _canary(public: bool) -> StepData:
    return canaries.canary_data(SHAPE, 1, 5, torch.Generator().manual_seed(0), fill=FILL if public else None)


@pytest.mark.parametrize("flawed,correct", [(SameBatchMaskDPStep, MaskDPStep)])
def test_step_audit_catches_same_batch_maskdp_and_clears_the_fixed_step(flawed, correct) -> None:
    """σ = 1, q = 0.02: one step claims ε = 0.44 at δ = 1e-5. The same-batch public term shows when the canary
    was sampled, and the audit's 95% lower bound exceeds the claim; the decoupled step stays at 0."""
    q, sigma = 0.02, 1.0
    claim = accounting.poisson_gaussian(sigma, q, 1, DELTA).epsilon
    data = _canary(public=True)
    bad = dpaudit.step_audit(flawed(q, sigma, 1.0, q), canaries.probe_model(SHAPE, 5), data, 0, claim, DELTA,
                             trials=40_000)
    good = dpaudit.step_audit(correct(q, sigma, 1.0, q), canaries.probe_model(SHAPE, 5), data, 0, claim, DELTA,
                              trials=40_000)
    assert claim == pytest.approx(0.439, abs=1e-3)
    assert bad.violated and bad.epsilon_lower > 2 * claim, bad.as_dict()  # 0.73-1.63 over six seeds
    assert not good.violated and good.epsilon_lower < claim, good.as_dict()


def test_step_audit_catches_unclipped_dp_sgd_and_clears_dp_sgd() -> None:
    q, sigma = 0.02, 1.0
    claim = accounting.poisson_gaussian(sigma, q, 1, DELTA).epsilon
    data = _canary(public=False)
    bad = dpaudit.step_audit(UnclippedDPSGDStep(q, sigma, 1.0, q), canaries.probe_model(SHAPE, 5), data, 0, claim,
                             DELTA, trials=4000)
    good = dpaudit.step_audit(DPSGDStep(q, sigma, 1.0, q), canaries.probe_model(SHAPE, 5), data, 0, claim, DELTA,
                              trials=4000)
    assert bad.violated and bad.epsilon_lower > 3 * claim, bad.as_dict()
    assert not good.violated, good.as_dict()


# Slow (~40 s: two 500-step runs over 1,000 canaries). The default run keeps the same-batch control in the step
# audit above and the one-run audit's other controls below.
@pytest.mark.slow
def test_one_run_audit_catches_same_batch_maskdp_at_the_video_suites_settings() -> None:
    """The issue's case: q = 0.032, 500 steps, σ calibrated to ε = 0.5 (δ = 1e-5). 1,000 canaries, 100 + 100
    guesses fixed in advance: the same-batch step is refuted (ε̂ > 0.5 at 95%: 0.56-0.77 over four seeds), the
    decoupled one shows nothing."""
    q, steps, m = 0.032, 500, 1000
    sigma = accounting.calibrate(0.5, q, steps, DELTA)
    claim = accounting.poisson_gaussian(sigma, q, steps, DELTA).epsilon
    data = canaries.canary_data(SHAPE, m, 5, torch.Generator().manual_seed(0), fill=FILL)
    runs = {cls: onerun.one_run_audit(cls(q, sigma, 1.0, q * m), canaries.probe_model(SHAPE, 5), data, claim, DELTA,
                                       steps=steps, lr=0.0, guesses=(100, 100))
            for cls in (SameBatchMaskDPStep, MaskDPStep)}
    assert claim <= 0.5 < runs[SameBatchMaskDPStep].epsilon_lower, runs[SameBatchMaskDPStep].as_dict()
    assert not runs[MaskDPStep].violated and runs[MaskDPStep].epsilon_lower < claim / 2, runs[MaskDPStep].as_dict()


def test_step_audit_catches_noise_repeated_across_steps() -> None:
    """Red-team finding (issue 24): a step that rewinds its noise generator passed audits that gave every trial a
    fresh generator. With one generator pair for all trials, as training has, the repeated noise is caught."""
    q, sigma = 0.02, 1.0
    claim = accounting.poisson_gaussian(sigma, q, 1, DELTA).epsilon
    bad = dpaudit.step_audit(RewoundNoiseDPSGDStep(q, sigma, 1.0, q), canaries.probe_model(SHAPE, 5),
                             _canary(public=False), 0, claim, DELTA, trials=2000)
    assert bad.violated and bad.epsilon_lower > 2 * claim, bad.as_dict()


def test_one_run_audit_says_when_it_cannot_refute_a_claim() -> None:
    """With 100 guesses even a perfect score shows at most ≈ 3.5: a claim above that is out of reach (vacuous)."""
    q, steps, m = 0.05, 100, 500
    sigma = 1.0
    claim = accounting.poisson_gaussian(sigma, q, steps, DELTA).epsilon
    data = canaries.canary_data(SHAPE, m, 5, torch.Generator().manual_seed(1))
    out = onerun.one_run_audit(UnclippedDPSGDStep(q, sigma, 1.0, q * m), canaries.probe_model(SHAPE, 5), data,
                                claim, DELTA, steps=steps, lr=0.0, guesses=(50, 50))
    assert out.details["ceiling"] == pytest.approx(onerun.one_run_epsilon(m, 100, 100, DELTA, 0.95))
    assert 3.0 < out.details["ceiling"] < claim and out.details["vacuous"] == 1.0 and not out.violated


def test_one_run_audit_catches_unclipped_dp_sgd() -> None:
    q, steps, m = 0.05, 100, 500
    sigma = 1.0
    claim = accounting.poisson_gaussian(sigma, q, steps, DELTA).epsilon
    data = canaries.canary_data(SHAPE, m, 5, torch.Generator().manual_seed(1))
    bad = onerun.one_run_audit(UnclippedDPSGDStep(q, sigma, 1.0, q * m), canaries.probe_model(SHAPE, 5), data, claim,
                                DELTA, steps=steps, lr=0.0, guesses=(50, 50))
    good = onerun.one_run_audit(DPSGDStep(q, sigma, 1.0, q * m), canaries.probe_model(SHAPE, 5), data, claim, DELTA,
                                 steps=steps, lr=0.0, guesses=(50, 50))
    assert bad.epsilon_lower > good.epsilon_lower and not good.violated, (bad.as_dict(), good.as_dict())
    assert math.isfinite(bad.epsilon_lower)


def test_neighbours_follow_each_steps_adjacency() -> None:
    data = canaries.canary_data(SHAPE, 4, 5, torch.Generator().manual_seed(2), fill=FILL)
    changed = torch.tensor([False, True, False, True])
    removed = DPSGDStep(0.1, 1.0, 1.0, 0.4).neighbour(data, changed)
    assert len(removed) == 2 and torch.equal(removed.images, data.images[[0, 2]])
    blanked = MaskDPStep(0.1, 1.0, 1.0, 0.4).neighbour(data, changed)
    assert torch.equal(blanked.images[1], data.public[1]) and torch.equal(blanked.images[0], data.images[0])
    assert torch.equal(blanked.public, data.public)


CONTROL_PLUGIN = '''
from privbench.core.registry import DEFENSES
from privbench.defenses.dp_sgd import DPSGD
from tests.dp_controls import UnclippedDPSGDStep


@DEFENSES.register("unclipped-dp-sgd-control")
class UnclippedDPSGD(DPSGD):
    """Test-only: DP-SGD that forgets to clip (its claimed ε is false)."""

    def training_step(self, plan, n):
        return UnclippedDPSGDStep(plan.sample_rate, plan.noise_multiplier, self.params.max_grad_norm,
                                  plan.sample_rate * n)
'''

VIOLATION_SUITE = """
name: dpviolation
datasets: [digits]
seeds: [0]
splits: {private: 100, aux: 100, test: 100, targets: 10}
task: {model: convnet, width: 8, epochs: 1, batch_size: 2}
defenses:
  - id: unclipped-dp-sgd-control
  - id: dp-sgd
attacks:
  - id: gradient-idlg
    params: {targets: 2, steps: 20}
"""


def test_every_epsilon_claim_is_audited_and_a_violation_fails_its_cells(tmp_path) -> None:
    """Through the runner: dp-sgd's record carries both accountants and its audit, consistent; the same recipe
    without clipping (q = 0.02, σ = 1: a one-step claim of 0.44) is refuted, its cell fails naming the violation,
    and the board's DP table says so."""
    from privbench.core.records import iter_records
    from privbench.report.frame import load_frame
    from privbench.report.tables import build_board
    from privbench.run.config import load_suite
    from privbench.run.plugins import load_plugins
    from privbench.run.runner import run_suite
    from privbench.run.worker import RunOptions
    from tests.conftest import write_suite

    plugin = tmp_path / "control.py"
    plugin.write_text(CONTROL_PLUGIN)
    load_plugins((str(plugin),))
    out = tmp_path / "out"
    run_suite(load_suite(write_suite(tmp_path / "s.yaml", VIOLATION_SUITE)),
              RunOptions(out=out, jobs=1, progress=False, plugins=(str(plugin),), dp_audit_trials=4000))
    recs = {r["defense"]["id"]: r for _, r in iter_records(out / "records")}
    good, bad = recs["dp-sgd"], recs["unclipped-dp-sgd-control"]
    assert good["status"] == "ok", good.get("reason")
    dp = good["metrics"]["dp"]
    assert dp["epsilon"] == min(dp["epsilon_pld"], dp["epsilon_rdp"]) and dp["audit_violated"] == 0.0
    assert dp["audit_step_epsilon"] <= dp["audit_step_claim"] and dp["audit_run_epsilon"] <= dp["audit_run_claim"]
    assert bad["status"] == "failed" and "DP violation" in bad["reason"], bad.get("reason")
    assert bad["metrics"]["dp"]["audit_violated"] == 1.0
    df = load_frame(out)
    board = build_board(out, "dpviolation", df)
    table = next(t for t in board.tables if t.key == "dp-digits")
    verdicts = {r.cells["config"].text.split()[0]: r.cells["verdict"].text for r in table.rows}
    assert verdicts["dp-sgd"].startswith("consistent") and verdicts["unclipped-dp-sgd-control"].startswith(
        "VIOLATION"), verdicts


def _blackbox_splits():
    from privbench.core.specs import SplitConfig
    from privbench.data import load_splits

    return load_splits("digits", SplitConfig(private=400, aux=100, test=300, targets=20), 0)


def test_blackbox_one_run_audit_refutes_an_identity_release_claiming_dp_and_clears_noise() -> None:
    """A submission's self-reported ε is audited on what it releases: an identity release that claims ε = 0.5 is
    refuted (every canary it was given is in the release), pure noise claiming the same is not."""
    from privbench.core.contracts import RunContext, TaskConfig
    from privbench.core.release import Release
    from privbench.defenses import DEFENSES

    splits = _blackbox_splits()
    ctx = RunContext(seed=0, device=torch.device("cpu"), task=TaskConfig())
    identity = DEFENSES.get("blur")(DEFENSES.get("blur").Params(sigma=0.3))

    def noise(s):
        return Release(data=ImageSet(torch.rand(s.private.images.shape, generator=torch.Generator().manual_seed(1)),
                                     s.private.labels))

    bad = onerun.one_run_blackbox(lambda s: identity.build(s, ctx), splits, 0.5, DELTA, seed=11)
    good = onerun.one_run_blackbox(noise, splits, 0.5, DELTA, seed=11)
    assert bad.violated and bad.details["correct"] == bad.details["guesses"], bad.as_dict()
    assert not good.violated and good.epsilon_lower < 0.5, good.as_dict()
    assert bad.claimed == 1.0  # replace-one form of the add/remove claim: 2ε
    with pytest.raises(InputError, match="neither"):
        onerun.one_run_blackbox(lambda s: Release(), splits, 0.5, DELTA, seed=11)


@pytest.mark.parametrize("recode", ["negative", "permutation", "shift"])
def test_blackbox_audit_sees_through_a_re_encoded_identity_release(recode) -> None:
    """Red-team round 2 (issue 24): a negative, a fixed pixel permutation or a one-pixel shift of each image
    defeated a nearest-neighbour score; the ridge decoder fitted on the slots without canaries undoes them."""
    from privbench.core.release import Release

    splits = _blackbox_splits()
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))

    def release(s):
        x = s.private.images
        y = {"negative": lambda: 1 - x, "permutation": lambda: x.reshape(len(x), -1)[:, perm].reshape(x.shape),
             "shift": lambda: torch.roll(x, 1, dims=-1)}[recode]()
        return Release(data=ImageSet(y.contiguous(), s.private.labels))

    out = onerun.one_run_blackbox(release, splits, 0.5, DELTA, seed=11)
    assert out.violated, out.as_dict()


def test_blackbox_audit_treats_labels_as_public_and_fails_closed_on_what_it_cannot_compare() -> None:
    """Red-team round 3: each row replaced by its class's aux mean uses no private pixel and must not be refuted
    (canaries carry their slot's label); a lossless copy hidden in a synthetic set of another shape beside
    harmless data is refused (InputError: the entry becomes unreliable), not passed."""
    from privbench.core.release import Release

    splits = _blackbox_splits()
    means = torch.stack([splits.aux.images[splits.aux.labels == c].mean(0) for c in range(10)])

    def class_means(s):
        return Release(data=ImageSet(means[s.private.labels].contiguous(), s.private.labels))

    for seed in (11, 12, 13):
        out = onerun.one_run_blackbox(class_means, splits, 0.5, DELTA, seed=seed)
        assert not out.violated, out.as_dict()

    def hidden(s):
        small = torch.nn.functional.interpolate(s.private.images, size=(4, 4))
        return Release(data=ImageSet(torch.zeros_like(s.private.images), s.private.labels),
                       synthetic=ImageSet(small, s.private.labels))

    with pytest.raises(InputError, match="cannot compare"):
        onerun.one_run_blackbox(hidden, splits, 0.5, DELTA, seed=11)


def test_the_dp_audit_command_audits_each_claiming_configuration_and_writes_json(tmp_path, capsys) -> None:
    """`privbench dp-audit`: one line per configuration that claims an ε (σ = 0 claims none and is left out),
    dp_audit.json with both audits, exit 0 when nothing is refuted; a suite without DP is an input error."""
    import json

    from privbench.cli import main
    from tests.conftest import write_suite

    suite = write_suite(tmp_path / "dp.yaml", VIOLATION_SUITE.replace("  - id: unclipped-dp-sgd-control\n", "")
                        .replace("  - id: dp-sgd\n", "  - id: dp-sgd\n  - id: dp-sgd\n    params: {noise_multiplier: 0.0}\n"))
    out = tmp_path / "audit"
    code = main(["dp-audit", "--suite", str(suite), "--out", str(out), "--trials", "400", "--canaries", "100",
                 "--guesses", "10", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    audits = json.loads((out / "dp_audit.json").read_text())["audits"]
    assert len(audits) == 1 and audits[0]["defense"] == "dp-sgd" and not audits[0]["violated"]
    assert {"step", "one_run"} <= set(audits[0]) and "digits dp-sgd noise_multiplier=1.0: step ε̂" in printed
    plain = write_suite(tmp_path / "plain.yaml", VIOLATION_SUITE.replace("  - id: unclipped-dp-sgd-control\n", "")
                        .replace("  - id: dp-sgd\n", "  - id: none\n"))
    assert main(["dp-audit", "--suite", str(plain), "--out", str(out)]) == 2
