"""Inpainting attacks on masked releases: restore the removed (masked) content.

- ``inpaint-classical``: OpenCV's Telea (fast marching, Telea 2004) or Navier–Stokes (Bertalmío et al., CVPR 2001)
  inpainting of the masked region; no training, no aux.
- ``inpaint-learned`` (adaptive): a U-Net trained on aux images masked by the defense's own public transform and
  mask generator, then applied to the released targets.
- ``inpaint-diffusion``: RePaint (Lugmayr et al., CVPR 2022) with an unconditional diffusers DDPM loaded from a local
  directory (``params.model_dir``; never downloaded). Without one, the cell is skipped with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from privbench.attacks.nets import InpaintNet, TrainBudget, fit_decoder, shift_pairs
from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView
from privbench.core.errors import InputError
from privbench.core.images import Access, Surface
from privbench.core.registry import ATTACKS
from privbench.core.seeding import seeded
from privbench.core.threats import ThreatModel
from privbench.models import map_batched

_CV_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


def classical_fill(images: torch.Tensor, masks: torch.Tensor, method: str = "telea",
                   radius: float = 3.0) -> torch.Tensor:
    """OpenCV inpainting of ``masks (N,1,H,W)`` (true = removed) in ``images (N,C,H,W)`` in [0,1] (8-bit inside)."""
    flag = _CV_METHODS[method]
    out = []
    for x, m in zip(images, masks):
        img = np.ascontiguousarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        res = cv2.inpaint(img, m[0].numpy().astype(np.uint8) * 255, radius, flag)
        out.append(torch.from_numpy(res.reshape(img.shape).astype(np.float32) / 255.0).permute(2, 0, 1))
    filled = torch.stack(out)
    return torch.where(masks.expand_as(images), filled, images)


def _targets(view: AttackView) -> tuple[torch.Tensor, torch.Tensor]:
    assert view.release.data is not None and view.release.mask is not None
    return view.release.data.images[view.targets], view.release.mask[view.targets]


@ATTACKS.register("inpaint-classical")
class ClassicalInpainting(Attack):
    """OpenCV Telea / Navier–Stokes inpainting of the masked region."""

    threat = ThreatModel.OBSERVER
    requires = frozenset({Surface.DATA, Surface.MASK})
    access = Access.BLACK_BOX
    positive_controls = {"sparse-holes": 0.7}

    @dataclass(frozen=True)
    class Params:
        method: str = "telea"
        radius: float = 3.0

        def __post_init__(self) -> None:
            if self.method not in _CV_METHODS:
                raise InputError(f"method must be one of {sorted(_CV_METHODS)}, got {self.method!r}")
            if not self.radius > 0:
                raise InputError(f"radius must be > 0, got {self.radius}")

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        images, masks = _targets(view)
        return AttackOutput(reconstructions=classical_fill(images, masks, self.params.method, self.params.radius))


@ATTACKS.register("inpaint-learned")
class LearnedInpainting(Attack):
    """Adaptive learned inpainting: a U-Net refining Telea inpainting, trained on aux masked by the defense's own
    public transform and mask generator."""

    threat = ThreatModel.OBSERVER
    requires = frozenset({Surface.DATA, Surface.TRANSFORM, Surface.MASK})
    access = Access.BLACK_BOX
    adaptive = True
    positive_controls = {"sparse-holes": 0.7}

    @dataclass(frozen=True)
    class Params(TrainBudget):
        lr: float = 1e-3

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        rel = view.release
        transform = rel.transform
        assert transform is not None and transform.has_mask
        images, masks = _targets(view)
        c, h, w = view.image_shape
        p = self.params

        def make_inputs(aux: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            masked, m = transform.with_mask(aux)  # one secret draw for the release and its mask
            return torch.cat([classical_fill(masked, m), m.float()], 1)

        with seeded(ctx.generator("inpaint-init")):
            net = InpaintNet(c, (h, w), p.width)
        fit_decoder(net, view.aux.images, make_inputs, ctx, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                    salt=303, augment=shift_pairs)  # pairs shifted together: a secret shift does not defeat it
        recon = map_batched(net, torch.cat([classical_fill(images, masks), masks.float()], 1), ctx.device)
        return AttackOutput(reconstructions=recon.clamp(0, 1))


@ATTACKS.register("inpaint-diffusion")
class DiffusionInpainting(Attack):
    """RePaint inpainting with a local unconditional diffusers DDPM (``model_dir``); skipped when none is given."""

    threat = ThreatModel.OBSERVER
    requires = frozenset({Surface.DATA, Surface.MASK})
    access = Access.BLACK_BOX
    positive_controls = {"sparse-holes": 0.7}

    @dataclass(frozen=True)
    class Params:
        model_dir: str = ""
        steps: int = 50
        jump_length: int = 5
        jump_n_sample: int = 2
        batch_size: int = 32

        def __post_init__(self) -> None:
            if self.model_dir and not Path(self.model_dir).expanduser().is_dir():
                raise InputError(f"model_dir {self.model_dir} does not exist (a diffusers pipeline directory with "
                                 "unet/ and scheduler/, as written by save_pretrained)")
            if min(self.steps, self.jump_length, self.jump_n_sample, self.batch_size) < 1:
                raise InputError("steps, jump_length, jump_n_sample and batch_size must be >= 1")

    def compatible(self, surfaces: frozenset[Surface]) -> Optional[str]:
        reason = super().compatible(surfaces)
        if reason is None and not self.params.model_dir:
            return ("no local diffusion model: set params.model_dir to a diffusers directory holding an "
                    "unconditional UNet2DModel (unet/) and a scheduler (scheduler/)")
        return reason

    def load(self, device: torch.device):
        """The RePaint pipeline from ``model_dir`` (local files only; the UNet's weights load as safetensors)."""
        from diffusers import RePaintPipeline, RePaintScheduler, UNet2DModel

        root = Path(self.params.model_dir).expanduser()
        unet = UNet2DModel.from_pretrained(root / "unet", local_files_only=True)
        scheduler = RePaintScheduler.from_pretrained(root / "scheduler", local_files_only=True)
        return RePaintPipeline(unet=unet, scheduler=scheduler).to(device)

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        images, masks = _targets(view)
        pipe = self.load(ctx.device)
        if pipe.unet.config.in_channels != images.shape[1]:
            raise InputError(f"inpaint-diffusion: the model in {self.params.model_dir} takes "
                             f"{pipe.unet.config.in_channels} channels, the images have {images.shape[1]}")
        p = self.params
        g = ctx.generator("repaint")
        out = []
        for i in range(0, len(images), p.batch_size):
            x = images[i:i + p.batch_size]
            keep = (~masks[i:i + p.batch_size]).float().expand_as(x)
            res = pipe(image=(x * 2 - 1).to(ctx.device), mask_image=keep.to(ctx.device), num_inference_steps=p.steps,
                       jump_length=p.jump_length, jump_n_sample=p.jump_n_sample, generator=g, output_type="np")
            pred = torch.from_numpy(np.asarray(res.images)).permute(0, 3, 1, 2).float()
            out.append(x * keep + pred * (1 - keep))
        return AttackOutput(reconstructions=torch.cat(out).clamp(0, 1))
