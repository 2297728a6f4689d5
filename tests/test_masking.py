"""Mask-based desensitization and the inpainting attacks: masked pixels carry nothing, inpainting beats a mean
fill inside small masks, the diffusion attack runs from a local pipeline or is skipped with its reason."""

from __future__ import annotations

import pytest
import torch

from attacks.inpainting import ClassicalInpainting, DiffusionInpainting, LearnedInpainting
from benchmark.config import SplitConfig
from benchmark.contracts import Release, RunContext, Surface, TaskConfig
from benchmark.data import load_splits
from benchmark.errors import InputError
from benchmark.metrics import masked_psnr
from defenses.masking import InterpretationMasking
from tests.conftest import run_attack

CTX = RunContext(seed=0, device=torch.device("cpu"), task=TaskConfig(model="convnet", width=16, epochs=3))


@pytest.fixture(scope="module")
def digits_release():
    splits = load_splits("mnist5k", SplitConfig(private=400, aux=200, test=100, targets=50), 0)
    defense = InterpretationMasking(InterpretationMasking.Params(masked=0.6, fill=0.0))
    return splits, defense, defense.build(splits, CTX)


def test_masked_pixels_carry_no_information(digits_release) -> None:
    splits, defense, release = digits_release
    x, rel, m = splits.private.images, release.data.images, release.mask
    assert m.shape == (len(x), 1, 28, 28) and abs(float(m.float().mean()) - 0.6) < 0.01
    assert torch.all(rel[m.expand_as(rel)] == 0.0)  # constant fill
    assert torch.equal(rel[~m.expand_as(rel)], x[~m.expand_as(x)])  # visible pixels untouched
    # Replace everything inside the mask by noise: wherever the mask stays the same, the release is identical.
    noisy = torch.where(m.expand_as(x), torch.rand(x.shape, generator=torch.Generator().manual_seed(0)), x)
    g = torch.Generator()
    same_mask = (defense.mask_generator(noisy, g) == m).flatten(1).all(1)
    assert same_mask.float().mean() > 0.5
    assert torch.equal(defense.transform(noisy, g)[same_mask], rel[same_mask])


def test_masks_come_from_class_templates(digits_release) -> None:
    _, defense, release = digits_release
    assert defense._templates is not None and defense._templates.shape == (10, 1, 28, 28)
    # at most one distinct mask per class
    assert len({bytes(mk.numpy().tobytes()) for mk in release.mask}) <= 10


def test_wrong_image_size_for_the_mask_generator(digits_release) -> None:
    _, defense, _ = digits_release
    with pytest.raises(InputError, match=r"images are \(32, 32\) px but the templates are \(28, 28\)"):
        defense.mask_generator(torch.rand(2, 1, 32, 32), torch.Generator())


def test_bad_masking_params() -> None:
    with pytest.raises(InputError, match="masked"):
        InterpretationMasking.Params(masked=1.0)


def _square_masks(n: int, size: int, side: int, g: torch.Generator) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size, dtype=torch.bool)
    corner = torch.randint(0, size - side, (n, 2), generator=g)
    for i, (r, c) in enumerate(corner.tolist()):
        m[i, :, r:r + side, c:c + side] = True
    return m


@pytest.fixture(scope="module")
def small_mask_view():
    """A hand-built release with small random square masks (defender side: its transform and mask generator stay
    in the runner; attacks query them). Returns ``(release, splits, masks of the targets)``."""
    splits = load_splits("photo-patches", SplitConfig(private=300, aux=600, test=50, targets=60), 0)

    def masks(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return _square_masks(len(images), 32, 6, g)

    def transform(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return images.masked_fill(masks(images, g).expand_as(images), 0.0)

    g = torch.Generator().manual_seed(1)
    m = masks(splits.private.images, g)
    data = splits.private.images.masked_fill(m.expand_as(splits.private.images), 0.0)
    from benchmark.contracts import ImageSet
    release = Release(data=ImageSet(data, splits.private.labels), transform=transform, mask=m, mask_generator=masks)
    return release, splits, m[splits.targets]


def _mean_fill(release: Release, targets: torch.Tensor) -> torch.Tensor:
    x = release.data.images[targets]
    m = release.mask[targets].expand_as(x)
    mean = (x * ~m).sum((2, 3), keepdim=True) / (~m).sum((2, 3), keepdim=True)
    return torch.where(m, mean.expand_as(x), x)


@pytest.mark.parametrize("attack", [ClassicalInpainting(ClassicalInpainting.Params(method="telea")),
                                    ClassicalInpainting(ClassicalInpainting.Params(method="ns")),
                                    LearnedInpainting(LearnedInpainting.Params(epochs=4, width=16))],
                         ids=["telea", "ns", "learned"])
def test_inpainting_beats_mean_fill_inside_small_masks(small_mask_view, attack) -> None:
    release, splits, masks = small_mask_view
    originals = splits.private.images[splits.targets]
    recon = run_attack(attack, release, splits, task=CTX.task).output.reconstructions
    assert recon.shape == originals.shape
    outside = ~masks.expand_as(recon)
    assert torch.allclose(recon[outside], release.data.images[splits.targets][outside], atol=1 / 255 + 1e-6)
    ours = masked_psnr(recon, originals, masks).mean()
    baseline = masked_psnr(_mean_fill(release, splits.targets), originals, masks).mean()
    assert ours > baseline + 0.5, (float(ours), float(baseline))


def _tiny_repaint_dir(tmp_path, channels: int) -> str:
    from diffusers import RePaintScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=channels, out_channels=channels, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    unet.save_pretrained(tmp_path / "unet")
    RePaintScheduler(num_train_timesteps=20).save_pretrained(tmp_path / "scheduler")
    return str(tmp_path)


def test_diffusion_inpainting_runs_from_a_local_pipeline(tmp_path, small_mask_view) -> None:
    release, splits, masks = small_mask_view
    originals = splits.private.images[splits.targets]
    attack = DiffusionInpainting(DiffusionInpainting.Params(model_dir=_tiny_repaint_dir(tmp_path, 3), steps=4,
                                                            jump_length=2, jump_n_sample=1, batch_size=64))
    assert attack.compatible(frozenset({Surface.DATA, Surface.MASK})) is None
    recon = run_attack(attack, release, splits, task=CTX.task).output.reconstructions
    assert recon.shape == originals.shape and torch.isfinite(recon).all()
    outside = ~masks.expand_as(recon)
    assert torch.allclose(recon[outside], release.data.images[splits.targets][outside])


def test_diffusion_without_model_is_skipped_with_reason_and_missing_dir_is_an_error(tmp_path) -> None:
    reason = DiffusionInpainting().compatible(frozenset({Surface.DATA, Surface.MASK}))
    assert reason is not None and "model_dir" in reason
    with pytest.raises(InputError, match="does not exist"):
        DiffusionInpainting.Params(model_dir=str(tmp_path / "missing"))
