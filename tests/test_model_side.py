"""Issue 5: gradient matching, membership inference, memorisation, DP-SGD, synthetic data from BN statistics."""

from __future__ import annotations

import pytest
import torch

from privbench.attacks import ATTACKS
from privbench.attacks.gradient import infer_labels
from privbench.attacks.membership import lira_scores, logit_confidence
from privbench.core.contracts import AttackOutput, RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import Surface
from privbench.core.specs import SplitConfig
from privbench.data import load_splits
from privbench.defenses import DEFENSES
from privbench.run.scoring import score
from tests.conftest import run_attack

CPU = torch.device("cpu")


def _ctx(**task) -> RunContext:
    return RunContext(seed=0, device=CPU, task=TaskConfig(**task))


def _attack_result(attack_id: str, release, splits, ctx, **params):
    cls = ATTACKS.get(attack_id)
    return run_attack(cls(cls.Params(**params)), release, splits, task=ctx.task)


def _run(attack_id: str, release, splits, ctx, **params):
    result = _attack_result(attack_id, release, splits, ctx, **params)
    out = result.output
    if out.per_gallery is not None:
        out = AttackOutput(reconstructions=out.per_gallery[result.truth], extra=out.extra)
    return score(out, splits, result.truth, use_lpips=False, is_member=result.is_member,
                 oracle=release.gradients)[0]


@pytest.fixture(scope="module")
def mnist():
    return load_splits("mnist5k", SplitConfig(private=300, aux=300, test=300, targets=40), 0)


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", SplitConfig(private=150, aux=600, test=400, targets=150), 0)


# --- gradient matching ------------------------------------------------------------------------------------------

def test_dlg_recovers_one_image_from_an_undefended_lenet(mnist) -> None:
    ctx = _ctx(model="lenet-dlg", width=12, epochs=1)
    release = DEFENSES.get("none")().build(mnist, ctx)
    privacy = _run("gradient-dlg", release, mnist, ctx, targets=1, steps=200)
    assert privacy["psnr"] >= 30.0, privacy["psnr"]


def test_idlg_label_rule_and_batch_alignment(mnist) -> None:
    ctx = _ctx(model="lenet-dlg", width=12, epochs=1)
    release = DEFENSES.get("none")().build(mnist, ctx)
    oracle = release.gradients
    idx = torch.tensor([0, 1, 2])
    labels = mnist.private.labels[idx]
    if len(set(labels.tolist())) == 3:
        assert set(infer_labels(oracle(idx), oracle.model, 3).tolist()) == set(labels.tolist())
    assert int(infer_labels(oracle(idx[:1]), oracle.model, 1)) == int(labels[0])
    # A batch's reconstructions come back in any order; the runner matches them to the originals.
    originals = mnist.private.images[mnist.targets[:4]]
    out = AttackOutput(reconstructions=originals[[1, 0, 3, 2]], groups=torch.tensor([0, 0, 1, 1]),
                       sources=mnist.targets[:4])
    privacy = score(out, mnist, None, use_lpips=False, oracle=oracle)[0]
    assert privacy["psnr"] == 100.0


def test_inverting_gradients_batches_and_bad_batch_sizes(mnist) -> None:
    ctx = _ctx(model="lenet-dlg", width=12, epochs=1)
    release = DEFENSES.get("none")().build(mnist, ctx)
    out = _attack_result("gradient-ig", release, mnist, ctx, batch_size=2, targets=2, steps=60, restarts=1).output
    assert out.reconstructions.shape == (2, 1, 28, 28) and out.groups.tolist() == [0, 0]
    for bad in (0, 9, True):
        with pytest.raises(InputError, match="batch_size"):
            ATTACKS.get("gradient-ig").Params(batch_size=bad)


# --- DP-SGD and membership --------------------------------------------------------------------------------------

def test_lira_matches_a_direct_gaussian_likelihood_ratio() -> None:
    from scipy.stats import norm

    g = torch.Generator().manual_seed(0)
    phi = torch.randn(6, 5, generator=g, dtype=torch.float64)
    inside = (torch.arange(6)[:, None] + torch.arange(5)[None, :]) % 2 == 0  # 3 IN / 3 OUT per candidate
    target = torch.randn(5, generator=g, dtype=torch.float64)
    got = lira_scores(target, phi, inside)
    mu_in = torch.stack([phi[inside[:, j], j].mean() for j in range(5)])
    mu_out = torch.stack([phi[~inside[:, j], j].mean() for j in range(5)])
    sd_in = float((phi - mu_in)[inside].std(unbiased=False)) + 1e-6
    sd_out = float((phi - mu_out)[~inside].std(unbiased=False)) + 1e-6
    for j in range(5):
        want = norm.logpdf(float(target[j]), float(mu_in[j]), sd_in) - norm.logpdf(float(target[j]), float(mu_out[j]),
                                                                                    sd_out)
        assert abs(float(got["lira_online"][j]) - want) < 1e-9
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.softmax(logits, 1)[0, 0]
    assert abs(float(logit_confidence(logits, torch.tensor([0]))) - float(torch.log(p / (1 - p)))) < 1e-5


def test_adaptive_lira_trains_its_shadows_through_the_defense_pipeline(digits) -> None:
    """Adaptive shadows for dp-sgd are DP-SGD models (no BatchNorm), trained by the defender on the attacker's
    halves; without the pipeline an adaptive attack refuses to run."""
    ctx = _ctx(model="convnet", width=8, epochs=1)
    cls = DEFENSES.get("dp-sgd")
    defense = cls(cls.Params(noise_multiplier=1.0))
    release = defense.build(digits, ctx)
    attack = ATTACKS.get("membership")(ATTACKS.get("membership").Params(shadows=2, adaptive=True))
    result = run_attack(attack, release, digits, task=ctx.task, defense=defense)
    assert result.output.extra["adaptive"] == 1.0
    assert set(result.output.membership_scores) == {"loss", "lira_online", "lira_offline"}
    assert all(torch.isfinite(s).all() for s in result.output.membership_scores.values())
    from privbench.run.attack_child import AttackError

    with pytest.raises(AttackError, match="pipeline"):
        run_attack(attack, release, digits, task=ctx.task)


@pytest.mark.slow
def test_lira_detects_an_overfit_model_and_dp_sgd_pulls_it_to_chance(digits) -> None:
    """A model trained 60 epochs on 150 images leaks membership; DP-SGD at epsilon <= 1 does not."""
    ctx = _ctx(model="convnet", width=16, epochs=60, batch_size=32)
    overfit = DEFENSES.get("none")().build(digits, ctx)
    leaky = _run("membership", overfit, digits, ctx, shadows=4)
    assert leaky["lira_online_auc"] >= 0.6, leaky
    dp_cls = DEFENSES.get("dp-sgd")
    private = dp_cls(dp_cls.Params(target_epsilon=1.0, epochs=20)).build(digits, ctx)
    assert private.meta.epsilon <= 1.0 + 1e-6
    safe = _run("membership", private, digits, ctx, shadows=4)
    assert abs(safe["membership_auc"] - 0.5) < abs(leaky["membership_auc"] - 0.5)
    assert safe["membership_auc"] < 0.58, safe


def test_dp_sgd_bad_input_and_clipped_update(digits) -> None:
    cls = DEFENSES.get("dp-sgd")
    for bad in ({"target_epsilon": 0.0}, {"target_epsilon": -1.0}, {"noise_multiplier": -1.0}, {"delta": 1.0}):
        with pytest.raises(InputError):
            cls.Params(**bad)
    ctx = _ctx(model="convnet", width=8, epochs=1)
    # σ = 0 is the same recipe without noise: the fair utility reference, with no privacy claim (no ε)
    assert cls(cls.Params(noise_multiplier=1.0)).recipe_reference() == cls.Params(noise_multiplier=0.0)
    assert cls(cls.Params(noise_multiplier=0.0)).recipe_reference() is None
    plain = cls(cls.Params(noise_multiplier=0.0)).build(digits, ctx)
    assert plain.meta.epsilon is None and plain.meta.delta is None
    release = cls(cls.Params(noise_multiplier=1e-6, max_grad_norm=0.5)).build(digits, ctx)
    assert release.surfaces == frozenset({Surface.MODEL, Surface.GRADIENTS}) and release.meta.epsilon > 0
    grads = release.gradients(torch.arange(4))
    norm = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))
    assert norm <= 0.5 + 1e-3  # the mean of clipped per-sample gradients (noise negligible here)
    # Red-team findings (issue 24): [j]*8 would give sample j 8× the sensitivity the per-update ε assumes, and a
    # reordering of a batch must not be a fresh noise draw to average away.
    with pytest.raises(InputError, match="distinct"):
        release.gradients(torch.tensor([0, 0]))
    noisy = cls(cls.Params(noise_multiplier=1.0, max_grad_norm=0.5)).build(digits, ctx)
    a, b = noisy.gradients(torch.tensor([0, 1, 2])), noisy.gradients(torch.tensor([2, 0, 1]))
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))
    from privbench.ops.accounting import poisson_gaussian

    assert noisy.meta.extra["epsilon_per_update"] == pytest.approx(  # one sample replaced: sensitivity 2C
        poisson_gaussian(0.5, 1.0, 1, 1e-5).epsilon)


# --- memorisation and synthetic data -----------------------------------------------------------------------------

def test_memorization_decodes_training_images_from_a_malicious_none_model(mnist) -> None:
    ctx = _ctx(model="convnet", width=16, epochs=10)
    release = DEFENSES.get("none")().build(mnist, ctx)
    lsb = _run("memorization", release, mnist, ctx, encoding="lsb", images=4)
    assert lsb["psnr"] >= 40 and lsb["memorized_rate"] == 1.0
    sign = _run("memorization", release, mnist, ctx, encoding="sign", images=4, bits=4)
    assert sign["psnr"] >= 25 and sign["ssim"] >= 0.9
    with pytest.raises(InputError, match="encoding"):
        ATTACKS.get("memorization").Params(encoding="nope")


def test_bn_synthetic_releases_useful_images_far_from_the_originals(mnist) -> None:
    ctx = _ctx(model="convnet", width=16, epochs=18)
    cls = DEFENSES.get("bn-synthetic")
    release = cls(cls.Params(per_class=6, iterations=80)).build(mnist, ctx)
    assert release.surfaces == frozenset({Surface.SYNTHETIC, Surface.MODEL, Surface.GRADIENTS})
    assert release.synthetic.images.shape == (60, 1, 28, 28)
    assert release.meta.extra["teacher_top1"] > 0.6
    syn = _run("nearest-neighbour", release, mnist, ctx)
    plain = _ctx(model="convnet", width=8, epochs=1)  # nearest-neighbour reads the released data only
    ref = _run("nearest-neighbour", DEFENSES.get("none")().build(mnist, plain), mnist, plain)
    assert ref["memorized_rate"] == 1.0 and syn["memorized_rate"] == 0.0 and syn["ssim"] < 0.5
    # What the malicious code memorises is the synthetic training set, not the originals.
    mem = _run("memorization", release, mnist, ctx, encoding="lsb", images=4)
    assert mem["training_psnr"] >= 40 and mem["psnr"] < 20
    # Bad input: a task model without BatchNorm.
    with pytest.raises(InputError, match="BatchNorm"):
        cls(cls.Params(per_class=1, iterations=1)).build(mnist, _ctx(model="lenet", epochs=1))


def test_gan_attack_returns_class_prototypes(mnist) -> None:
    ctx = _ctx(model="convnet", width=16, epochs=3)
    release = DEFENSES.get("none")().build(mnist, ctx)
    out = _attack_result("gan-attack", release, mnist, ctx, per_class=2, steps=30).output
    assert out.reconstructions.shape == (20, 1, 28, 28) and out.class_labels.tolist()[:3] == [0, 0, 1]
    privacy = score(out, mnist, None, use_lpips=False)[0]
    assert 0 <= privacy["ssim"] <= 1 and privacy["psnr"] > 0



def test_capacity_abuse_reads_thumbnails_from_predictions(mnist) -> None:
    """Black-box decoding works only on the model the malicious code trained (an honest model gives noise)."""
    from privbench.attacks.memorization import _abuse_decode

    ctx = _ctx(model="convnet", width=16, epochs=30)
    release = DEFENSES.get("none")().build(mnist, ctx)
    abused = _run("memorization", release, mnist, ctx, encoding="capacity", images=4, bits=4)
    honest = _abuse_decode(release.model, (4,) + tuple(mnist.info.shape), 4)
    originals = mnist.private.images[mnist.targets[:4]]
    from privbench.metrics.image import psnr, ssim

    assert abused["ssim"] > float(ssim(honest, originals).mean()) + 0.1
    assert abused["psnr"] > float(psnr(honest, originals).mean()) + 1.0


def test_a_freshly_built_dp_sgd_model_backpropagates_without_opacus_hooks(digits) -> None:
    cls = DEFENSES.get("dp-sgd")
    release = cls(cls.Params(noise_multiplier=1.0)).build(digits, _ctx(model="convnet", width=8, epochs=1))
    model = release.model.train()
    x = digits.aux.images[:4].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), digits.aux.labels[:4]).backward()  # raised "pop from empty list"
    assert x.grad is not None and torch.isfinite(x.grad).all()
