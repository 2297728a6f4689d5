"""Split-DNN privacy autoencoder: exact bitstream, adversarial training raises the adversary's loss, learned
inversion from the encoder surface, clear errors (Azizian & Bajić, PCS 2022)."""

from __future__ import annotations

import pytest
import torch

from privbench.attacks.inversion import InversionDecoder
from privbench.attacks.optim_inversion import OptimInversion
from privbench.core.contracts import RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import Surface
from privbench.core.specs import SplitConfig
from privbench.data import load_splits
from privbench.defenses.split_ae import SplitAE, SplitNone
from privbench.metrics import psnr
from tests.conftest import run_attack

TASK = TaskConfig(model="convnet", width=16, epochs=4)


@pytest.fixture(scope="module")
def splits():
    return load_splits("mnist5k", SplitConfig(private=500, aux=500, test=300, targets=40), 0)


@pytest.fixture(scope="module")
def releases(splits):
    ctx = RunContext(seed=0, device=torch.device("cpu"), task=TASK)
    out = {}
    for w in (0.0, 1.0):
        d = SplitAE(SplitAE.Params(w_rec=w, pretrain_epochs=8, adv_epochs=4))
        out[w] = (d, d.build(splits, ctx))
    return out


def test_bitstream_round_trip_is_exact_and_matches_the_encoder(splits, releases) -> None:
    _, rel = releases[1.0]
    assert rel.surfaces == frozenset({Surface.ENCODER, Surface.BITSTREAM, Surface.MODEL})
    decoded = rel.bitstream.decode(list(rel.bitstream.payloads[:16]))
    with torch.no_grad():
        served = rel.encoder(splits.private.images[:16])
    assert torch.allclose(decoded, served, atol=1e-5)
    assert rel.meta.bits_per_image == pytest.approx(8 * rel.bitstream.bytes_per_item)
    assert 0 < rel.meta.extra["bytes_vs_raw_features"] < 1


def test_cache_round_trip_restores_the_same_release(splits, releases) -> None:
    d, rel = releases[1.0]
    ctx = RunContext(seed=0, device=torch.device("cpu"), task=TASK)
    again = d.restore(d.release_state(rel), splits, ctx)
    x = splits.test.images[:8]
    with torch.no_grad():
        assert torch.allclose(again.model(x), rel.model(x))
    assert again.bitstream.payloads == rel.bitstream.payloads


@pytest.mark.slow
def test_adversarial_training_raises_the_adversary_loss(splits) -> None:
    """Paired over three seeds (at this budget one seed's end-of-training adversary loss is noisy)."""
    diffs = []
    for seed in range(3):
        ctx = RunContext(seed=seed, device=torch.device("cpu"), task=TaskConfig(model="convnet", width=16, epochs=3))
        loss = {w: SplitAE(SplitAE.Params(w_rec=w, pretrain_epochs=8, adv_epochs=4)).build(splits, ctx)
                .meta.extra["adversary_loss_final"] for w in (0.0, 1.0)}
        diffs.append(loss[1.0] - loss[0.0])
    assert sum(diffs) / len(diffs) > 0 and sum(d > 0 for d in diffs) >= 2, diffs


def test_learned_inversion_from_the_encoder_surface(splits, releases) -> None:
    _, rel = releases[0.0]
    attack = InversionDecoder(InversionDecoder.Params(epochs=4, width=16))
    assert attack.compatible(rel.surfaces) is None
    recon = run_attack(attack, rel, splits, task=TASK).output.reconstructions
    originals = splits.private.images[splits.targets]
    mean_image = splits.aux.images.mean(0, keepdim=True).expand_as(originals)
    assert psnr(recon, originals).mean() > psnr(mean_image, originals).mean() + 3


def test_bad_split_model_and_bits(splits) -> None:
    ctx = RunContext(seed=0, device=torch.device("cpu"), task=TASK)
    with pytest.raises(InputError, match="split point 'block9' does not exist"):
        SplitAE(SplitAE.Params(split="block9")).build(splits, ctx)
    with pytest.raises(InputError, match="needs a spatial"):
        SplitAE(SplitAE.Params(split="block3")).build(splits, ctx)
    with pytest.raises(InputError, match=r"bits must be an integer in \[1, 16\], got 0"):
        SplitAE.Params(bits=0)


@pytest.mark.slow  # 90 s on 2 cores; the split suite's competence gate checks the same attack on every run
def test_white_box_inversion_works_when_nothing_defends_and_less_against_split_ae(splits, releases) -> None:
    ctx = RunContext(seed=0, device=torch.device("cpu"), task=TASK)
    undefended = SplitNone().build(splits, ctx)
    originals = splits.private.images[splits.targets]
    scores = {}
    for name, rel in (("none", undefended), ("split-ae", releases[1.0][1])):
        recon = run_attack(OptimInversion(), rel, splits, task=TASK).output.reconstructions
        scores[name] = float(psnr(recon, originals).mean())
    assert scores["none"] >= 25.0, scores  # 29 dB at this test's budget (32-34 dB in the split suite)
    assert scores["split-ae"] < scores["none"] - 10, scores
    assert undefended.meta.extra["bytes_vs_raw_features"] == 1.0
