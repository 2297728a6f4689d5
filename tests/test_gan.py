"""GAN attack (Hitaj et al., CCS 2017): critic ``c`` never sees an aux image of class ``c``, and the released model
classifies the generated prototypes as their attacked class far above chance."""

from __future__ import annotations

import pytest
import torch

from privbench.attacks.gan import GANAttack, leave_one_class_out, train_generator
from privbench.core.contracts import RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.seeding import seeded
from privbench.core.specs import SplitConfig
from privbench.data import load_splits
from privbench.defenses import DEFENSES
from privbench.models import accuracy, build_model
from tests.conftest import run_attack

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mnist():
    return load_splits("mnist5k", SplitConfig(private=300, aux=300, test=100, targets=20), 0)


def test_leave_one_class_out_pools() -> None:
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 2])
    pools = leave_one_class_out(labels, 4)
    assert [p.tolist() for p in pools] == [[1, 2, 3, 5, 6], [0, 2, 4, 5, 6], [0, 1, 3, 4], list(range(7))]


def test_critic_of_a_class_never_sees_its_aux_images(mnist) -> None:
    """Every real batch any critic is trained on, recorded through the training hook."""
    seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    with seeded(torch.Generator().manual_seed(0)):
        model = build_model("convnet", 1, 10, width=4).eval().requires_grad_(False)
    params = GANAttack.Params(steps=12, batch_size=16)
    train_generator(model, mnist.aux, 10, params, torch.Generator().manual_seed(1), CPU,
                    hook=lambda c, real, fake: seen.append((c, real.clone(), fake.clone())))
    assert {c for c, _, _ in seen} == set(range(10))  # every critic trained
    for c, real, fake in seen:
        assert len(real) == len(fake) > 0
        assert not bool((real == c).any()), f"critic {c} was shown aux images of class {c}"
        assert bool((fake == c).all()), f"critic {c} judged generated images of another class"
    assert sum(len(f) for _, _, f in seen) == params.steps * params.batch_size  # nothing bypasses the hook


def test_gan_attack_agrees_with_the_released_model_far_above_chance(mnist) -> None:
    ctx = RunContext(seed=0, device=CPU, task=TaskConfig(model="convnet", width=16, epochs=15, batch_size=16))
    release = DEFENSES.get("none")().build(mnist, ctx)
    assert accuracy(release.model, mnist.test, CPU) > 0.6  # a trained model (an untrained one agrees at chance)
    attack = GANAttack(GANAttack.Params(steps=60, batch_size=32, per_class=3))
    out = run_attack(attack, release, mnist, task=ctx.task).output
    assert out.reconstructions.shape == (30, 1, 28, 28) and out.class_labels.tolist()[:4] == [0, 0, 0, 1]
    assert 0.0 <= float(out.reconstructions.min()) and float(out.reconstructions.max()) <= 1.0
    assert out.extra["target_agreement"] >= 0.8, out.extra  # chance: 0.1


def test_bad_gan_params() -> None:
    for bad in ({"steps": 0}, {"lr": 0.0}, {"w_adv": -1.0}):
        with pytest.raises(InputError):
            GANAttack.Params(**bad)
