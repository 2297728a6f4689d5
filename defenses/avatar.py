"""Avatar anonymisation of people in video (Schneider et al., arXiv 2410.17098; docs/METHODS.md §2).

Per clip: find the person (a pluggable estimator, :mod:`privbench.defenses.people`), restore the background where the person
was (a temporal-median plate of the uncovered pixels, holes filled by OpenCV inpainting; or per-frame inpainting),
and draw a neutral avatar from the 2-D keypoints: torso, limbs and head filled in one fixed, saturated colour.
With ``retarget`` every bone is redrawn at a canonical length, so body proportions do not identify; the pose
(joint angles, position, timing) is kept, since it carries the action.

**Assumptions** (the paper renders SMPL-H bodies, which need licence-gated model files): a flat 2-D avatar
instead of a rendered 3-D body; the optional diffusion refinement is SDEdit with a local unconditional DDPM
(``refine_dir``; none by default, and nothing is downloaded) instead of the paper's Stable Diffusion; the camera
is static when the median plate is used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from privbench.core.contracts import Defense, RunContext
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Modality, Splits, Surface
from privbench.core.registry import DEFENSES
from privbench.core.release import Release, ReleaseMeta
from privbench.core.threats import ThreatModel
from privbench.data.actions import JOINTS
from privbench.defenses.people import ESTIMATORS, as_clips, estimator

_J = {name: i for i, name in enumerate(JOINTS)}
#: Bones as (parent, child), in an order where every parent is placed before its children (root: pelvis).
BONES = (("pelvis", "neck"), ("neck", "head"), ("neck", "l_shoulder"), ("neck", "r_shoulder"),
         ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
         ("pelvis", "l_hip"), ("pelvis", "r_hip"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
         ("r_hip", "r_knee"), ("r_knee", "r_ankle"))
#: Canonical bone lengths as fractions of the frame height (the mean body of ``synthetic-actions``).
CANONICAL = {"neck": 0.186, "head": 0.093, "l_shoulder": 0.074, "r_shoulder": 0.074, "l_elbow": 0.102,
             "l_wrist": 0.093, "r_elbow": 0.102, "r_wrist": 0.093, "l_hip": 0.043, "r_hip": 0.043, "l_knee": 0.143,
             "l_ankle": 0.139, "r_knee": 0.143, "r_ankle": 0.139}
#: Segments drawn as thick lines (the torso is a filled quadrilateral).
_DRAWN = (("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
          ("l_hip", "l_knee"), ("l_knee", "l_ankle"), ("r_hip", "r_knee"), ("r_knee", "r_ankle"), ("neck", "head"))


def retarget(keypoints: np.ndarray, height: float, mode: str = "canonical") -> np.ndarray:
    """Keypoints ``(..., J, 2)`` with every bone rescaled to its :data:`CANONICAL` proportion, keeping the pelvis and
    each bone's direction. Missing joints (NaN) stay missing, and so do their children.

    ``canonical``: bone lengths are fractions of the frame ``height`` (one person at a known distance, as in
    synthetic-actions: body size does not identify). ``proportions``: the canonical body is scaled to each
    person's own size (the median over their frames, axis -3 of ``keypoints (..., T, J, 2)``, of their torso and
    leg lengths), for scenes where people stand at different distances.
    """
    scale = np.full(keypoints.shape[:-2] + (1,), float(height))
    if mode == "proportions":
        def length(parent: str, child: str) -> np.ndarray:
            return np.linalg.norm(keypoints[..., _J[child], :] - keypoints[..., _J[parent], :], axis=-1)

        own = (length("pelvis", "neck") + length("l_hip", "l_knee") + length("l_knee", "l_ankle"))
        ref = CANONICAL["neck"] + CANONICAL["l_knee"] + CANONICAL["l_ankle"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # people missing in every frame
            per_person = np.nanmedian(own, axis=-1, keepdims=True)
        scale = np.broadcast_to(per_person / ref, own.shape)[..., None]
    elif mode != "canonical":
        raise ValueError(f"retarget mode must be 'canonical' or 'proportions', got {mode!r}")
    out = np.full_like(keypoints, np.nan)
    out[..., _J["pelvis"], :] = keypoints[..., _J["pelvis"], :]
    for parent, child in BONES:
        d = keypoints[..., _J[child], :] - keypoints[..., _J[parent], :]
        norm = np.linalg.norm(d, axis=-1, keepdims=True)
        unit = np.divide(d, norm, out=np.zeros_like(d), where=norm > 1e-6)
        out[..., _J[child], :] = out[..., _J[parent], :] + unit * CANONICAL[child] * scale
    return out


def draw_avatar(frame: np.ndarray, joints: np.ndarray, colour: tuple[int, ...], thickness: int) -> np.ndarray:
    """Draw the avatar for ``joints (J, 2)`` (pixels) onto ``frame (H, W, 3)`` or ``(H, W)`` uint8 (in place)."""
    import cv2

    ok = np.isfinite(joints).all(1)
    pts = np.round(np.nan_to_num(joints) * 16).astype(np.int32)  # 4 fractional bits
    torso = [_J[k] for k in ("l_shoulder", "r_shoulder", "r_hip", "l_hip")]
    if ok[torso].all():
        cv2.fillConvexPoly(frame, pts[torso], colour, cv2.LINE_AA, shift=4)
    for a, b in _DRAWN:
        if ok[_J[a]] and ok[_J[b]]:
            cv2.line(frame, tuple(pts[_J[a]]), tuple(pts[_J[b]]), colour, thickness, cv2.LINE_AA, shift=4)
    if ok[_J["head"]]:
        cv2.circle(frame, tuple(pts[_J["head"]]), int(round(thickness * 1.6 * 16)), colour, -1, cv2.LINE_AA, shift=4)
    return frame


def background_plate(frames: np.ndarray, masks: np.ndarray, mode: str) -> np.ndarray:
    """The clip without its person: ``frames (T, H, W, 3)`` uint8, ``masks (T, H, W)`` bool -> ``(T, H, W, 3)``.

    ``median``: every frame gets the temporal median of the pixels the person does not cover (static camera);
    pixels covered in every frame are inpainted (Telea). ``inpaint``: each frame is inpainted on its own.
    """
    import cv2

    if mode == "inpaint":
        return np.stack([cv2.inpaint(f, m.astype(np.uint8), 3, cv2.INPAINT_TELEA) for f, m in zip(frames, masks)])
    stack = np.where(masks[..., None], np.nan, frames.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: filled below
        plate = np.nanmedian(stack, axis=0)
    holes = np.isnan(plate).any(-1)
    plate = np.nan_to_num(plate).round().clip(0, 255).astype(np.uint8)
    if holes.any():
        plate = cv2.inpaint(plate, holes.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return np.broadcast_to(plate, frames.shape).copy()


@DEFENSES.register("avatar")
class Avatar(Defense):
    """Replace each person by a neutral, single-colour 2-D avatar driven by their pose, over the restored
    background (Schneider et al., arXiv 2410.17098; a 2-D stand-in for their SMPL-H avatars)."""

    modalities = frozenset({Modality.VIDEO})
    surfaces = frozenset({Surface.DATA, Surface.TRANSFORM})
    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER})

    @dataclass(frozen=True)
    class Params:
        estimator: str = "ground-truth"
        retarget: str = "canonical"  # or "proportions" (people at different distances), or "none"
        background: str = "median"
        colour: tuple[int, int, int] = (255, 0, 255)
        thickness: float = 0.045  # limb width, fraction of the frame height
        dilate: int = 1  # pixels added around the person mask before the background is restored
        at_inference: bool = False  # also anonymise test clips before the action model sees them
        refine_dir: str = ""  # a local diffusers directory (unet/, scheduler/) for SDEdit refinement; "" = none
        refine_strength: float = 0.3  # share of the diffusion schedule the rewritten region is noised to
        refine_steps: int = 10

        def __post_init__(self) -> None:
            if self.estimator not in ESTIMATORS:
                raise InputError(f"estimator must be one of {sorted(ESTIMATORS)}, got {self.estimator!r}")
            if self.retarget not in ("canonical", "proportions", "none"):
                raise InputError(f"retarget must be 'canonical', 'proportions' or 'none', got {self.retarget!r}")
            if self.background not in ("median", "inpaint"):
                raise InputError(f"background must be 'median' or 'inpaint', got {self.background!r}")
            if len(self.colour) != 3 or not all(0 <= c <= 255 for c in self.colour):
                raise InputError(f"colour must be three values in 0..255, got {self.colour!r}")
            if not 0 < self.thickness < 0.5 or self.dilate < 0:
                raise InputError("thickness must be in (0, 0.5) and dilate >= 0")
            if self.refine_dir and not Path(self.refine_dir).expanduser().is_dir():
                raise InputError(f"refine_dir {self.refine_dir} does not exist (a diffusers directory with an "
                                 "unconditional UNet2DModel in unet/ and a DDPM scheduler in scheduler/)")
            if not 0 < self.refine_strength <= 1 or self.refine_steps < 1:
                raise InputError("refine_strength must be in (0, 1] and refine_steps >= 1")

    def transform(self, images: Tensor | ImageSet, generator: Optional[torch.Generator] = None) -> Tensor:
        """Anonymise clips ``(N, T, C, H, W)`` in [0, 1] (an :class:`ImageSet` when the estimator needs the
        clips' annotations). Deterministic unless ``refine_dir`` is set (the refinement's noise comes from
        ``generator``)."""
        return self.render(images, generator)[0]

    def render(self, images: Tensor | ImageSet, generator: Optional[torch.Generator] = None,
               canvas: Optional[float] = None) -> tuple[Tensor, Tensor]:
        """``(anonymised clips (N,T,C,H,W), avatar masks (N,T,1,H,W) bool)``: where the avatar was drawn.

        ``canvas``: draw the avatars onto this constant grey level in [0, 1] instead of the restored background, so
        that no pixel (not even an anti-aliased edge) reads the background: MaskDP's blanked clip ``x_pub``.
        """
        import cv2

        clips = as_clips(images)
        people = estimator(self.params.estimator).estimate(clips)
        if people.keypoints is None:
            raise InputError(f"estimator {self.params.estimator!r} gives no pose; the avatar needs keypoints")
        x = clips.images
        grey = x.shape[2] == 1
        frames = ((x.expand(-1, -1, 3, -1, -1) if grey else x).permute(0, 1, 3, 4, 2) * 255).round()
        frames_np = np.ascontiguousarray(frames.to(torch.uint8).numpy())
        masks = people.masks[:, :, 0].numpy()
        kps = people.keypoints.numpy().astype(np.float64)  # (N, T, P, J, 2)
        h = x.shape[-2]
        if self.params.retarget != "none":
            # people on the leading axes (N, P, T, J, 2) so that "proportions" takes medians over each one's frames
            kps = retarget(kps.transpose(0, 2, 1, 3, 4), h, self.params.retarget).transpose(0, 2, 1, 3, 4)
        kernel = np.ones((2 * self.params.dilate + 1,) * 2, np.uint8)
        out = np.empty(frames_np.shape, np.uint8)
        drawn = np.zeros(frames_np.shape[:4], np.uint8)
        rewritten = np.zeros(frames_np.shape[:4], bool)
        for i in range(len(frames_np)):
            m = masks[i]
            if self.params.dilate:
                m = np.stack([cv2.dilate(f.astype(np.uint8), kernel) > 0 for f in m])
            rewritten[i] = m
            if canvas is None:
                out[i] = background_plate(frames_np[i], m, self.params.background)
            else:
                out[i] = int(round(canvas * 255))
            for t in range(len(out[i])):
                for person in kps[i, t]:
                    thick = self._thickness(person, h)
                    draw_avatar(out[i, t], person, self.params.colour, thick)
                    draw_avatar(drawn[i, t], person, (1,), thick)
        y = torch.from_numpy(out).permute(0, 1, 4, 2, 3).float().div_(255.0)
        region = torch.from_numpy(rewritten | (drawn > 0)).unsqueeze(2)
        if self.params.refine_dir and canvas is None:
            y = self.refine(y, region, generator or torch.Generator().manual_seed(0))
        return (y.mean(2, keepdim=True) if grey else y), torch.from_numpy(drawn > 0).unsqueeze(2)

    def refine(self, clips: Tensor, region: Tensor, generator: torch.Generator) -> Tensor:
        """SDEdit (Meng et al., ICLR 2022) with a local unconditional DDPM: each frame is noised to
        ``refine_strength`` of the schedule and denoised in ``refine_steps`` steps; only the rewritten ``region``
        (the person's dilated mask and the avatar, ``(N,T,1,H,W)`` bool) takes the refined pixels. Frames are refined
        independently (no temporal model: refinement can flicker)."""
        from diffusers import DDPMScheduler, UNet2DModel

        root = Path(self.params.refine_dir).expanduser()
        unet = UNet2DModel.from_pretrained(root / "unet", local_files_only=True).eval()
        scheduler = DDPMScheduler.from_pretrained(root / "scheduler", local_files_only=True)
        if unet.config.in_channels != clips.shape[2]:
            raise InputError(f"refine_dir {root}: the model takes {unet.config.in_channels} channels, the clips have "
                             f"{clips.shape[2]}")
        n, t = clips.shape[:2]
        x0 = clips.flatten(0, 1) * 2 - 1
        scheduler.set_timesteps(self.params.refine_steps)
        start = int(self.params.refine_strength * scheduler.config.num_train_timesteps)
        steps = [s for s in scheduler.timesteps.tolist() if s < start] or [scheduler.timesteps.tolist()[-1]]
        noise = torch.randn(x0.shape, generator=generator)
        x = scheduler.add_noise(x0, noise, torch.tensor([steps[0]]))
        with torch.no_grad():
            for step in steps:
                eps = unet(x, step).sample
                x = scheduler.step(eps, step, x, generator=generator).prev_sample
        refined = ((x.clamp(-1, 1) + 1) / 2).view_as(clips)
        return torch.where(region.expand_as(clips), refined, clips)

    def _thickness(self, joints: np.ndarray, height: int) -> int:
        """Limb width in pixels: ``thickness`` × the frame height, or × the person's own scale (from the drawn
        torso) when bones are kept or scaled per person."""
        torso = np.linalg.norm(joints[_J["neck"]] - joints[_J["pelvis"]])
        scale = height if self.params.retarget == "canonical" or not np.isfinite(torso) else torso / CANONICAL["neck"]
        return max(1, int(round(self.params.thickness * scale)))

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        released = self.transform(splits.private, ctx.generator("release"))
        meta = ReleaseMeta()
        return Release(data=ImageSet(released, splits.private.labels.clone()), transform=self.transform,
                       inference_transform=self.transform if self.params.at_inference else None, meta=meta)

    def restore(self, state: Mapping[str, Any], splits: Splits, ctx: RunContext) -> Release:
        return Release(data=ImageSet(state["data_images"], state["data_labels"]), transform=self.transform,
                       inference_transform=self.transform if self.params.at_inference else None,
                       meta=ReleaseMeta(**state["meta"]))

    def public_info(self, shape: tuple[int, ...]) -> dict:
        return {"estimator": self.params.estimator, "retarget": self.params.retarget,
                "colour": list(self.params.colour), "canonical_bones": dict(CANONICAL)}
