"""Image-fidelity metrics for reconstruction privacy (lower attack fidelity = more private).

All functions take ``x`` (reconstruction) and ``y`` (original), float tensors ``(N, C, H, W)`` in [0, 1] on the
same device, and return per-sample values ``(N,)``. PSNR uses data range 1 and caps identical images at
:data:`PSNR_CAP_DB` (MSE floored at 1e-10).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from privbench.core.errors import InputError
from privbench.core.registry import METRICS

PSNR_CAP_DB = 100.0
_LUMA = (0.299, 0.587, 0.114)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise InputError(f"metric inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim != 4:
        raise InputError(f"metric inputs must be (N,C,H,W), got {tuple(x.shape)}")
    if x.device != y.device:
        raise InputError(f"metric inputs on different devices: {x.device} vs {y.device}")
    for name, t in (("reconstruction", x), ("original", y)):
        if not torch.isfinite(t).all():
            raise InputError(f"{name} contains NaN or infinite values")
        if t.numel() and (t.min() < -1e-6 or t.max() > 1 + 1e-6):
            raise InputError(f"{name} values outside [0, 1]")


def per_clip(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Let a per-sample frame metric ``fn(x (N,C,H,W), y, [mask (N,1,H,W)]) -> (N,)`` take clips ``(N,T,C,H,W)``
    (and masks ``(N,T,1,H,W)``): it is computed per frame and averaged over each clip's frames (NaN frames, e.g. an
    empty mask, are left out of the clip's mean) (docs/DESIGN.md, Modalities)."""

    @functools.wraps(fn)
    def wrapped(x: Tensor, y: Tensor, *masks: Tensor) -> Tensor:
        if x.ndim != 5:
            return fn(x, y, *masks)
        if x.shape != y.shape:
            raise InputError(f"metric inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        n, t = x.shape[:2]
        per = fn(x.flatten(0, 1), y.flatten(0, 1), *(m.flatten(0, 1) for m in masks)).view(n, t)
        return per.nanmean(1) if masks else per.mean(1)

    return wrapped


def _psnr_from_mse(mse: Tensor) -> Tensor:
    return 10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP_DB / 10)))


@per_clip
def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB, data range 1, per sample ``(N,)``."""
    _check_pair(x, y)
    return _psnr_from_mse(((x.double() - y.double()) ** 2).flatten(1).mean(1)).float()


def _ssim_kernel(h: int, w: int) -> int:
    k = min(11, h, w)
    return k if k % 2 == 1 else k - 1


@per_clip
def ssim(x: Tensor, y: Tensor) -> Tensor:
    """SSIM (Wang et al., TIP 2004) via piq: Gaussian window σ=1.5, size 11 (smaller odd size for tiny images),
    no downsampling; equals scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` averaged over channels."""
    _check_pair(x, y)
    import piq

    k = _ssim_kernel(*x.shape[-2:])
    return piq.ssim(x.clamp(0, 1), y.clamp(0, 1), data_range=1.0, kernel_size=k, downsample=False,
                    reduction="none").float()


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic total variation per sample ``(N,)``: mean absolute vertical plus mean absolute horizontal
    neighbour difference of ``x (N, C, H, W)`` (the image prior of inversion attacks and synthesis)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1) + \
        (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)


def luma(x: Tensor) -> Tensor:
    """``(N,C,H,W)`` -> ``(N,1,H,W)``: ITU-R BT.601 luma for colour, identity for grey."""
    if x.shape[1] == 3:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def sobel_magnitude(x: Tensor, eps: float = 0.0) -> Tensor:
    """Sobel gradient magnitude of the luma, kernels scaled by 1/4 (each axis in [-1, 1]); ``(N,1,H,W)``.

    ``eps > 0`` makes it differentiable where the gradient vanishes (``sqrt(g² + eps)``), for training losses.
    """
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device) / 4
    k = torch.stack([kx, kx.T]).unsqueeze(1)
    g = F.conv2d(F.pad(luma(x), (1, 1, 1, 1), mode="replicate"), k)
    return (g.pow(2).sum(1, keepdim=True) + eps).sqrt()


@per_clip
def edge_psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR (data range 1) between Sobel magnitudes of the lumas: fidelity of edges (Azizian & Bajić 2022)."""
    _check_pair(x, y)
    return _psnr_from_mse(((sobel_magnitude(x.double()) - sobel_magnitude(y.double())) ** 2).flatten(1).mean(1)
                          ).float()


def _check_mask(mask: Tensor, x: Tensor) -> Tensor:
    if mask.ndim != 4 or mask.shape[0] != x.shape[0] or mask.shape[-2:] != x.shape[-2:] or mask.shape[1] not in (
            1, x.shape[1]):
        raise InputError(f"mask shape {tuple(mask.shape)} does not fit images {tuple(x.shape)}")
    return mask.to(torch.bool).expand_as(x)


@per_clip
def masked_psnr(x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """PSNR over the pixels where ``mask (N,1|C,H,W)`` is true (the sensitive region); NaN where it is empty."""
    _check_pair(x, y)
    m = _check_mask(mask, x).double()
    se = ((x.double() - y.double()) ** 2 * m).flatten(1).sum(1)
    count = m.flatten(1).sum(1)
    out = _psnr_from_mse(se / count.clamp_min(1))
    return torch.where(count > 0, out, torch.full_like(out, float("nan"))).float()


@per_clip
def masked_ssim(x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Mean of scikit-image's SSIM map over the masked pixels; NaN where the mask is empty."""
    from skimage.metrics import structural_similarity

    _check_pair(x, y)
    m = _check_mask(mask, x)
    k = _ssim_kernel(*x.shape[-2:])
    out = []
    for xi, yi, mi in zip(x.double().cpu().numpy(), y.double().cpu().numpy(), m.cpu().numpy()):
        _, smap = structural_similarity(xi, yi, win_size=k, data_range=1.0, channel_axis=0, full=True,
                                        gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        out.append(float(smap[mi].mean()) if mi.any() else float("nan"))
    return torch.tensor(out, dtype=torch.float32)


def _piq(name: str, **kw: object) -> Callable[[Tensor, Tensor], Tensor]:
    """A piq metric by function name (piq imported on first use: it pulls in torchvision)."""
    def metric(x: Tensor, y: Tensor) -> Tensor:
        import piq

        _check_pair(x, y)
        extra = {"chromatic": x.shape[1] == 3} if name == "fsim" else {}
        return getattr(piq, name)(x.clamp(0, 1), y.clamp(0, 1), data_range=1.0, reduction="none", **kw,
                                  **extra).float()
    return metric


@dataclass(frozen=True)
class MetricSpec:
    """A registered reconstruction metric: ``fn(x, y) -> (N,)``, its direction and minimum image side."""

    fn: Callable[[Tensor, Tensor], Tensor]
    higher_is_similar: bool = True
    min_size: int = 1
    channels: tuple[int, ...] = (1, 3)


METRICS.register("psnr")(MetricSpec(psnr))
METRICS.register("ssim")(MetricSpec(ssim, min_size=3))
METRICS.register("edge-psnr")(MetricSpec(edge_psnr))
METRICS.register("fsim")(MetricSpec(_piq("fsim"), min_size=8))
METRICS.register("gmsd")(MetricSpec(_piq("gmsd"), higher_is_similar=False, min_size=8))
METRICS.register("haarpsi")(MetricSpec(_piq("haarpsi"), min_size=16))
METRICS.register("ms-ssim")(MetricSpec(_piq("multi_scale_ssim"), min_size=161))

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def lpips_weights_path() -> Path:
    """Where torchvision caches AlexNet's ImageNet weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def lpips_status() -> Optional[str]:
    """``None`` if LPIPS(alex) can run offline, else the reason with the file that would enable it."""
    p = lpips_weights_path()
    if p.is_file():
        return None
    return f"unavailable: AlexNet backbone weights not found at {p} (place torchvision's {ALEXNET_FILE} there)"


def build_lpips() -> torch.nn.Module:
    """LPIPS-alex (Zhang et al., CVPR 2018): linear heads shipped by the ``lpips`` package, AlexNet backbone
    loaded from :func:`lpips_weights_path` with ``weights_only=True``. Never downloads."""
    import lpips

    reason = lpips_status()
    if reason is not None:
        raise FileNotFoundError(reason)
    model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    backbone = torch.load(lpips_weights_path(), map_location="cpu", weights_only=True)
    state = model.state_dict()
    for key in state:
        if key.startswith("net.slice"):
            _, _, idx, param = key.split(".")
            state[key] = backbone[f"features.{idx}.{param}"]
    model.load_state_dict(state)
    return model.eval()


def lpips_distance(x: Tensor, y: Tensor, model: torch.nn.Module) -> Tensor:
    """LPIPS distance per sample (lower = more similar); grey images are repeated to 3 channels."""
    _check_pair(x, y)
    if x.shape[1] == 1:
        x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
    with torch.no_grad():
        return model(x * 2 - 1, y * 2 - 1).flatten().float()


def reconstruction_metrics(x: Tensor, y: Tensor, mask: Optional[Tensor] = None,
                           use_lpips: bool = True) -> tuple[dict[str, Optional[float]], dict[str, str]]:
    """All registered fidelity metrics, averaged over samples.

    Returns ``(values, unavailable)``: ``values[name]`` is a float (or ``None`` when it cannot be computed) and
    ``unavailable[name]`` says why. Samples where a metric is undefined (non-finite) are left out of its mean and
    counted under ``unavailable["partial.<name>"]``. Clips ``(N,T,C,H,W)`` are scored frame by frame (every clip
    has ``T`` frames, so the mean over frames equals the mean of the clips' frame means).
    """
    if x.ndim == 5 and x.shape == y.shape:
        x, y = x.flatten(0, 1), y.flatten(0, 1)
        mask = None if mask is None else mask.flatten(0, 1)
    _check_pair(x, y)
    values: dict[str, Optional[float]] = {}
    missing: dict[str, str] = {}
    side = min(x.shape[-2:])
    for name, spec in METRICS.items():
        if side < spec.min_size:
            values[name] = None
            missing[name] = f"images are {side}px; {name} needs at least {spec.min_size}px"
            continue
        per = spec.fn(x, y)
        finite = torch.isfinite(per)
        if not bool(finite.any()):
            values[name] = None
            missing[name] = f"{name} is undefined for all {len(per)} samples"
            continue
        values[name] = float(per[finite].mean())
        if not bool(finite.all()):  # e.g. piq's HaarPSI is inf for an all-black image compared with itself
            missing[f"partial.{name}"] = (f"undefined for {int((~finite).sum())} of {len(per)} samples "
                                          "(e.g. all-black images); averaged over the rest")
    reason = lpips_status() if use_lpips else "disabled"
    if reason is None and side >= 16:
        values["lpips"] = float(lpips_distance(x, y, build_lpips()).mean())
    else:
        values["lpips"] = None
        missing["lpips"] = reason or f"images are {side}px; lpips needs at least 16px"
    if mask is not None:
        values["masked-psnr"] = float(np.nanmean(masked_psnr(x, y, mask).numpy()))
        values["masked-ssim"] = float(np.nanmean(masked_ssim(x, y, mask).numpy())) if side >= 3 else None
    return values, missing
