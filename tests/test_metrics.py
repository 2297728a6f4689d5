"""Metrics agree with independent implementations and have their basic properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import roc_auc_score

from privbench.core.errors import InputError
from privbench.metrics import (
    bits_per_pixel,
    edge_psnr,
    linkage_scores,
    masked_psnr,
    masked_ssim,
    membership_scores,
    psnr,
    reconstruction_metrics,
    ssim,
)
from privbench.metrics.image import PSNR_CAP_DB, build_lpips, lpips_distance, lpips_status


def _pair(c: int, size: int = 32, n: int = 4, sigma: float = 0.1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, c, size, size, generator=g)
    x = (y + sigma * torch.randn(y.shape, generator=g)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("c", [1, 3])
def test_psnr_matches_skimage(c: int) -> None:
    x, y = _pair(c)
    ours = psnr(x, y)
    ref = [peak_signal_noise_ratio(b.numpy(), a.numpy(), data_range=1.0) for a, b in zip(x, y)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-3)


@pytest.mark.parametrize("c,size", [(1, 32), (3, 32), (1, 28)])
def test_ssim_matches_skimage(c: int, size: int) -> None:
    x, y = _pair(c, size)
    ours = ssim(x, y)
    ref = [structural_similarity(a.double().numpy(), b.double().numpy(), data_range=1.0, channel_axis=0,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
           for a, b in zip(x, y)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-3)


def test_masked_ssim_full_mask_equals_ssim_map_mean() -> None:
    x, y = _pair(1, 28)
    full = torch.ones(4, 1, 28, 28, dtype=torch.bool)
    np.testing.assert_allclose(masked_psnr(x, y, full).numpy(), psnr(x, y).numpy(), atol=1e-4)
    # skimage's mean SSIM crops the border; the masked variant averages the whole map, so only close, not equal.
    assert np.allclose(masked_ssim(x, y, full).numpy(), ssim(x, y).numpy(), atol=0.05)


def test_masked_psnr_only_sees_the_mask() -> None:
    x, y = _pair(1, 16, sigma=0.0)
    x = x.clone()
    x[:, :, :8] = 1 - x[:, :, :8]  # corrupt the top half only
    mask = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 8:] = True
    assert torch.all(masked_psnr(x, y, mask) == PSNR_CAP_DB)
    assert torch.all(masked_psnr(x, y, ~mask) < 20)
    with pytest.raises(InputError, match="mask shape"):
        masked_psnr(x, y, mask[:, :, :4])


def test_fidelity_properties() -> None:
    x, y = _pair(3)
    assert torch.all(psnr(y, y) == PSNR_CAP_DB)
    assert torch.allclose(ssim(y, y), torch.ones(4), atol=1e-5)
    assert torch.allclose(psnr(x, y), psnr(y, x))
    worse, _ = _pair(3, sigma=0.3)
    assert torch.all(psnr(worse, y) < psnr(x, y))
    assert torch.all(ssim(worse, y) < ssim(x, y))
    assert torch.all(edge_psnr(worse, y) < edge_psnr(x, y))


def test_edge_psnr_ignores_flat_offsets_but_not_edges() -> None:
    y = torch.zeros(1, 1, 16, 16)
    y[..., 8:] = 0.8
    shifted = (y + 0.1).clamp(0, 1)  # same edges, different level
    blurred = torch.nn.functional.avg_pool2d(y, 5, 1, 2, count_include_pad=False)
    assert edge_psnr(shifted, y) > 90
    assert edge_psnr(blurred, y) < psnr(blurred, y) + 5


def test_metric_input_validation() -> None:
    x, y = _pair(1)
    with pytest.raises(InputError, match="shape"):
        psnr(x, y[:, :, :16])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        psnr(bad, y)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        ssim(x * 3, y)


def test_reconstruction_metrics_reports_unavailable_with_reasons() -> None:
    x, y = _pair(1, 8)
    values, missing = reconstruction_metrics(x, y)
    assert values["psnr"] is not None and values["ms-ssim"] is None
    assert "161" in missing["ms-ssim"] and "haarpsi" in missing


def test_lpips_unavailable_names_the_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reason = lpips_status()
    assert reason is not None and str(tmp_path) in reason and "alexnet-owt-7be5be79.pth" in reason
    x, y = _pair(3)
    values, missing = reconstruction_metrics(x, y)
    assert values["lpips"] is None and str(tmp_path) in missing["lpips"]


def test_lpips_loads_local_backbone(tmp_path, monkeypatch) -> None:
    """The offline loading path: a local AlexNet state dict (random here, real in use) is wired into LPIPS."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    sd = torchvision.models.alexnet().state_dict()
    torch.save(sd, ckpt / "alexnet-owt-7be5be79.pth")
    assert lpips_status() is None
    model = build_lpips()
    assert torch.equal(model.state_dict()["net.slice1.0.weight"], sd["features.0.weight"])
    x, y = _pair(3)
    assert torch.allclose(lpips_distance(y, y, model), torch.zeros(4), atol=1e-6)
    assert torch.all(lpips_distance(x, y, model) > 0)


def test_linkage_scores() -> None:
    truth = torch.tensor([0, 1, 2, 3])
    rankings = torch.tensor([[0, 1], [0, 1], [3, 2], [2, 1]])
    s = linkage_scores(rankings, truth, gallery_size=10)
    assert s["top1"] == 0.25 and s["top5"] == 0.75 and s["chance_top1"] == 0.1


def test_membership_matches_sklearn_and_is_calibrated() -> None:
    g = torch.Generator().manual_seed(0)
    member = torch.rand(2000, generator=g) < 0.5
    scores = torch.randn(2000, generator=g) + 1.5 * member.float()
    out = membership_scores(scores, member)
    assert out["auc"] == pytest.approx(roc_auc_score(member.numpy(), scores.numpy()))
    assert 0.8 < out["auc"] < 0.9
    noise = membership_scores(torch.randn(2000, generator=g), member)
    assert abs(noise["auc"] - 0.5) < 0.05
    # ~1,000 non-members resolve FPR 1% (10 false positives) only when there are at least 1,000 of them
    n_non = int((~member).sum())
    assert out["smallest_resolvable_fpr"] == pytest.approx(10 / n_non)
    assert (noise["tpr_at_1pct_fpr"] is None) == (n_non < 1000) and noise["tpr_at_0.1pct_fpr"] is None
    many = torch.rand(30000, generator=g) < 0.5
    resolved = membership_scores(torch.randn(30000, generator=g), many)
    assert resolved["tpr_at_0.1pct_fpr"] is not None and resolved["tpr_at_1pct_fpr"] < 0.03


def test_bits_per_pixel() -> None:
    out = bits_per_pixel([b"\x00" * 98, b"\x00" * 98], 28, 28)
    assert out["bytes_per_image"] == 98 and out["bpp"] == pytest.approx(1.0)


def test_an_undefined_sample_is_left_out_and_counted() -> None:
    """piq's HaarPSI is inf for an all-black image compared with itself: that sample is left out of the mean and
    the record says how many were undefined, instead of a non-finite metric failing the cell."""
    from privbench.metrics.image import reconstruction_metrics

    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x[0] = 0.0
    values, missing = reconstruction_metrics(x, x.clone(), use_lpips=False)
    assert values["haarpsi"] == pytest.approx(1.0, abs=1e-4)
    assert "undefined for 1 of 3 samples" in missing["partial.haarpsi"]
