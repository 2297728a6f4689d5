"""Mask-based desensitization and the attacks on it: masked pixels carry nothing and the default fill really removes
content, the mask alone leaks class shape (mask inversion beats the mean-image prior), inpainting beats a mean fill
inside small masks, the diffusion attack runs from a local pipeline or is skipped with its reason."""

from __future__ import annotations

import pytest
import torch

from privbench.attacks.inpainting import ClassicalInpainting, DiffusionInpainting, LearnedInpainting
from privbench.attacks.inversion import MaskInversion
from privbench.core.contracts import RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import Surface
from privbench.core.release import Release
from privbench.core.specs import SplitConfig
from privbench.core.typed import build_dataclass
from privbench.data import load_splits
from privbench.defenses.masking import InterpretationMasking
from privbench.metrics import masked_psnr
from privbench.metrics.image import ssim
from tests.conftest import run_attack

# A trained interpretation model (an untrained one predicts one class, so every image would get the same mask).
CTX = RunContext(seed=0, device=torch.device("cpu"), task=TaskConfig(model="convnet", width=16, epochs=15,
                                                                     batch_size=16))


@pytest.fixture(scope="module")
def digits_release():
    splits = load_splits("mnist5k", SplitConfig(private=400, aux=200, test=100, targets=50), 0)
    # class templates: the fill and mask properties below are those of a mask that depends on the predicted class
    # only (a per-image Grad-CAM mask also depends on the removed pixels: test_per_image_masks_are_each_images_own)
    defense = InterpretationMasking(InterpretationMasking.Params(masked=0.5, masks="class-template"))
    return splits, defense, defense.build(splits, CTX)


def _with_fill(defense: InterpretationMasking, fill) -> InterpretationMasking:
    """The built ``defense`` (same templates and aux mean) with another fill."""
    other = InterpretationMasking(InterpretationMasking.Params(masked=defense.params.masked, fill=fill,
                                                               masks=defense.params.masks))
    other._interp, other._templates, other._aux_mean = defense._interp, defense._templates, defense._aux_mean
    return other


def _replace_masked(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x`` with every masked pixel replaced by faint noise (faint, so most predicted classes, hence masks, stay)."""
    return torch.where(m.expand_as(x), 0.3 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize("fill", ["aux-mean", "noise", 0.0])
def test_masked_pixels_carry_no_information(digits_release, fill) -> None:
    splits, built, _ = digits_release
    defense = _with_fill(built, fill)
    x = splits.private.images
    rel, m = defense.transform(x, torch.Generator().manual_seed(3)), defense.mask_generator(x, torch.Generator())
    assert m.shape == (len(x), 1, 28, 28) and abs(float(m.float().mean()) - 0.5) < 0.01
    assert torch.equal(rel[~m.expand_as(rel)], x[~m.expand_as(x)])  # visible pixels untouched
    # Replace everything inside the mask: the fill is the same, and wherever the mask stays the same (the predicted
    # class did not change), so is the release (for the same secret draw).
    noisy = _replace_masked(x, m)
    assert torch.equal(defense.fill_values(noisy, torch.Generator().manual_seed(3)),
                       defense.fill_values(x, torch.Generator().manual_seed(3)))
    same_mask = (defense.mask_generator(noisy, torch.Generator()) == m).flatten(1).all(1)
    assert same_mask.float().mean() > 0.5
    assert torch.equal(defense.transform(noisy, torch.Generator().manual_seed(3))[same_mask], rel[same_mask])


def test_default_fill_is_the_aux_mean_and_really_removes_content(digits_release) -> None:
    splits, defense, release = digits_release
    x, rel, m = splits.private.images, release.data.images, release.mask
    mean = splits.aux.images.mean(0, keepdim=True).expand_as(x)
    assert torch.equal(rel[m.expand_as(rel)], mean[m.expand_as(mean)])
    # MNIST's removed pixels are mostly background, already 0: the old constant 0 fill is a near no-op there.
    inside = float(masked_psnr(rel, x, m).mean())  # measured: 24 dB
    zero = float(masked_psnr(_with_fill(defense, 0.0).transform(x, torch.Generator()), x, m).mean())  # 45 dB
    assert zero > 39.0 and inside < 28.0, (zero, inside)


def test_noise_fill_is_fresh_secret_randomness(digits_release) -> None:
    splits, built, _ = digits_release
    defense = _with_fill(built, "noise")
    x = splits.private.images[:20]
    m = defense.mask_generator(x, torch.Generator()).expand_as(x)
    a, b = (defense.transform(x, torch.Generator().manual_seed(s)) for s in (1, 2))
    assert torch.equal(a, defense.transform(x, torch.Generator().manual_seed(1)))  # a function of the draw only
    assert not torch.equal(a[m], b[m]) and torch.equal(a[~m], b[~m])
    assert float(masked_psnr(a, x, m[:, :1]).mean()) < 10.0


def test_fill_params_and_their_yaml_form() -> None:
    cls = InterpretationMasking.Params
    assert cls().fill == "aux-mean"
    assert build_dataclass(cls, {"fill": 0}, "masking").fill == 0.0  # the old constant fill stays available
    assert build_dataclass(cls, {"fill": "noise"}, "masking").fill == "noise"
    for bad in ("zeros", 1.5, -0.1):
        with pytest.raises(InputError, match="fill"):
            cls(fill=bad)


def test_mask_alone_leaks_class_shape(digits_release) -> None:
    """Mask inversion (decoder fitted on aux masked by the public algorithm) beats the aux-mean-image prior."""
    splits, _, release = digits_release
    originals = splits.private.images[splits.targets]
    prior = float(ssim(splits.aux.images.mean(0, keepdim=True).expand_as(originals), originals).mean())
    out = run_attack(MaskInversion(MaskInversion.Params(neighbours=8)), release, splits, task=CTX.task).output
    assert out.reconstructions.shape == originals.shape
    ours = float(ssim(out.reconstructions, originals).mean())
    assert ours > prior + 0.08, (ours, prior)
    # The mask surface alone (no transform to mask aux images with): still above the prior.
    only_mask = Release(mask=release.mask)
    assert MaskInversion().compatible(only_mask.surfaces) is None
    blind = run_attack(MaskInversion(MaskInversion.Params(neighbours=8)), only_mask, splits, task=CTX.task).output
    assert float(ssim(blind.reconstructions, originals).mean()) > prior, prior


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
    from privbench.core.images import ImageSet
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


def test_per_image_masks_are_each_images_own() -> None:
    """Issue 29: with class templates a mask names its class (10 distinct masks on 10 classes); per-image Grad-CAM
    masks differ image by image, and the template mode still gives one mask per predicted class."""
    import torch

    from privbench.core.contracts import RunContext, TaskConfig
    from privbench.core.registry import DEFENSES
    from privbench.core.specs import SplitConfig
    from privbench.data.core import load_splits

    splits = load_splits("mnist5k", SplitConfig(private=200, aux=100, test=50, targets=10), 0)
    ctx = RunContext(seed=0, device=torch.device("cpu"), task=TaskConfig(epochs=2, width=8))
    cls = DEFENSES.get("masking")
    per_image = cls(cls.Params(masknet=False)).build(splits, ctx).mask.flatten(1)
    template = cls(cls.Params(masknet=False, masks="class-template")).build(splits, ctx).mask.flatten(1)
    assert len({tuple(m.tolist()) for m in per_image}) > 150
    assert len({tuple(m.tolist()) for m in template}) <= 10
