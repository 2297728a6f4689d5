"""``synthetic-actions``: procedurally generated, labelled action clips of articulated people (offline, seeded).

Each clip ``(T, 3, H, W)`` in [0, 1] shows one person performing one of :data:`ACTIONS` in front of a crop of a
real package photograph (scikit-image / scikit-learn sample images), with a static camera.

- **Action** is carried only by joint-angle trajectories over time (a cycle per clip, random phase), so a single
  frame is ambiguous between several actions.
- **Identity** is carried by appearance (body proportions, limb thickness, shirt and trouser colours, a clothing
  texture, skin tone and a real face crop from scikit-image's ``lfw_subset``) and by a personal motion style
  (amplitude, tempo and arm carriage).
- **Ground truth** comes with every clip: 2-D keypoints ``(T, J, 2)`` in pixels (x, y) for the :data:`JOINTS`, and a
  person mask ``(T, 1, H, W)``.

The renderer uses OpenCV's drawing primitives on 8-bit canvases (≈1–2 ms per 16-frame 64×64 clip on one core).
This is privbench's own stand-in for action-recognition video with identities (docs/METHODS.md §2): the benchmark
states it as an assumption, not as a substitute for UCF101/HMDB51, which load through the video-folder loader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from privbench.core.errors import InputError
from privbench.core.registry import DATASETS
from privbench.data.core import Pool

#: Keypoints in the order of the ``keypoints`` arrays; ``l_``/``r_`` are the image's left and right (the people face
#: the camera).
JOINTS = ("head", "neck", "pelvis", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
          "l_hip", "l_knee", "l_ankle", "r_hip", "r_knee", "r_ankle")
#: Limbs as (parent, child) joint indices, drawn as thick segments.
LIMBS = ((3, 4), (4, 5), (6, 7), (7, 8), (9, 10), (10, 11), (12, 13), (13, 14), (1, 0))


@dataclass(frozen=True)
class Pose:
    """Angles in radians from straight down (positive turns towards image +x), and root offsets.

    ``lean`` tilts the torso; ``lift`` raises the pelvis (in body heights); ``shift`` moves it along x.
    """

    l_sho: float = 0.15
    l_elb: float = 0.0
    r_sho: float = -0.15
    r_elb: float = 0.0
    l_hip: float = 0.05
    l_knee: float = 0.0
    r_hip: float = -0.05
    r_knee: float = 0.0
    lean: float = 0.0
    lift: float = 0.0
    shift: float = 0.0


@dataclass(frozen=True)
class Style:
    """A person's motion style: amplitude and tempo factors and resting arm carriage (radians)."""

    amplitude: float
    tempo: float
    carriage: float


def _walk(p: float, s: Style) -> Pose:
    a = s.amplitude
    sw = 0.45 * a * math.sin(p)
    return Pose(l_sho=-sw * 0.8 + s.carriage, r_sho=sw * 0.8 - s.carriage, l_elb=0.2, r_elb=-0.2,
                l_hip=sw, r_hip=-sw, l_knee=max(0.0, -sw) * 0.8, r_knee=max(0.0, sw) * 0.8,
                lift=0.02 * abs(math.cos(p)), shift=0.25 * (p / (2 * math.pi) - 0.5))


def _run(p: float, s: Style) -> Pose:
    a = s.amplitude
    sw = 0.8 * a * math.sin(p)
    return Pose(l_sho=-sw + s.carriage, r_sho=sw - s.carriage, l_elb=1.4, r_elb=-1.4,
                l_hip=sw, r_hip=-sw, l_knee=-0.9 * max(0.2, -math.sin(p)), r_knee=0.9 * max(0.2, math.sin(p)),
                lean=0.15, lift=0.06 * abs(math.sin(p)), shift=0.5 * (p / (2 * math.pi) - 0.5))


def _jump(p: float, s: Style) -> Pose:
    h = max(0.0, math.sin(p))
    crouch = max(0.0, -math.sin(p))
    arms = 0.3 + 2.3 * h * s.amplitude
    return Pose(l_sho=arms, r_sho=-arms, l_hip=0.1 + 0.6 * crouch, r_hip=-0.1 - 0.6 * crouch,
                l_knee=-1.2 * crouch, r_knee=1.2 * crouch, lift=0.25 * h * s.amplitude - 0.08 * crouch)


def _wave_one(p: float, s: Style) -> Pose:
    return Pose(l_sho=0.1 + s.carriage, r_sho=-2.5, r_elb=-0.6 * s.amplitude * math.sin(p) - 0.2)


def _wave_both(p: float, s: Style) -> Pose:
    w = 0.6 * s.amplitude * math.sin(p)
    return Pose(l_sho=2.5, l_elb=w + 0.2, r_sho=-2.5, r_elb=w - 0.2)


def _squat(p: float, s: Style) -> Pose:
    d = 0.5 * (1 - math.cos(p)) * s.amplitude
    return Pose(l_sho=0.3 + 1.2 * d, r_sho=-0.3 - 1.2 * d, l_hip=0.2 + 0.9 * d, r_hip=-0.2 - 0.9 * d,
                l_knee=-1.8 * d, r_knee=1.8 * d, lift=-0.18 * d, lean=0.1 * d)


def _kick(p: float, s: Style) -> Pose:
    k = max(0.0, math.sin(p)) * s.amplitude
    return Pose(l_sho=0.4 + s.carriage, r_sho=-0.4 - s.carriage, r_hip=-0.05 - 1.4 * k, r_knee=0.6 * (1 - k),
                l_hip=0.05, lean=0.2 * k)


def _clap(p: float, s: Style) -> Pose:
    c = 0.5 * (1 + math.sin(p)) * s.amplitude
    return Pose(l_sho=1.6 - 0.9 * c, l_elb=-0.6 * c, r_sho=-1.6 + 0.9 * c, r_elb=0.6 * c)


def _box(p: float, s: Style) -> Pose:
    left = max(0.0, math.sin(p)) * s.amplitude
    right = max(0.0, -math.sin(p)) * s.amplitude
    return Pose(l_sho=0.9 + 0.7 * left, l_elb=1.6 * (1 - left), r_sho=-0.9 - 0.7 * right, r_elb=-1.6 * (1 - right),
                l_hip=0.2, r_hip=-0.2)


def _bow(p: float, s: Style) -> Pose:
    b = 0.5 * (1 - math.cos(p)) * s.amplitude
    return Pose(lean=0.9 * b, l_sho=0.1 + 0.5 * b + s.carriage, r_sho=-0.1 + 0.5 * b - s.carriage)


#: Action classes (label = position), each a pose trajectory ``phase (radians) -> Pose``.
ACTIONS: dict[str, Callable[[float, Style], Pose]] = {
    "walk": _walk, "run": _run, "jump": _jump, "wave-one": _wave_one, "wave-both": _wave_both, "squat": _squat,
    "kick": _kick, "clap": _clap, "box": _box, "bow": _bow}


@dataclass(frozen=True)
class Person:
    """An identity's appearance and style. Lengths are fractions of the body height; colours are RGB in [0, 255]."""

    torso: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    head: float
    shoulders: float
    hips: float
    thickness: float
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    skin: tuple[int, int, int]
    texture: int  # 0 plain, 1 horizontal stripes, 2 vertical stripes, 3 checks
    period: int
    face: int  # index into the lfw faces
    style: Style


def sample_person(rng: np.random.Generator, n_faces: int) -> Person:
    """Draw one identity (appearance + motion style) from ``rng``."""

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    def colour() -> tuple[int, int, int]:
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(90, 256), rng.integers(70, 256)]]])
        import cv2

        return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])  # type: ignore[return-value]

    tone = u(0.35, 1.0)
    return Person(torso=u(0.26, 0.34), upper_arm=u(0.14, 0.19), forearm=u(0.13, 0.17), thigh=u(0.2, 0.26),
                  shin=u(0.2, 0.25), head=u(0.065, 0.085), shoulders=u(0.09, 0.15), hips=u(0.05, 0.09),
                  thickness=u(0.045, 0.075), shirt=colour(), trousers=colour(),
                  skin=(int(255 * tone), int(205 * tone), int(170 * tone)), texture=int(rng.integers(0, 4)),
                  period=int(rng.integers(2, 5)), face=int(rng.integers(0, n_faces)),
                  style=Style(amplitude=u(0.75, 1.2), tempo=u(0.8, 1.25), carriage=u(-0.15, 0.25)))


def skeleton(person: Person, pose: Pose, root: tuple[float, float], height: float) -> np.ndarray:
    """Joint positions ``(J, 2)`` in pixels (x, y) for ``pose``; ``root`` is the standing pelvis position."""
    h = height
    px = root[0] + pose.shift * h
    py = root[1] - pose.lift * h
    pelvis = np.array([px, py])
    up = np.array([math.sin(pose.lean), -math.cos(pose.lean)])
    side = np.array([-up[1], up[0]])  # image +x when upright
    neck = pelvis + up * person.torso * h
    head = neck + up * (person.head * 1.6) * h

    def limb(start: np.ndarray, angle: float, length: float) -> np.ndarray:
        return start + np.array([math.sin(angle), math.cos(angle)]) * length * h

    l_sho, r_sho = neck - side * person.shoulders * h, neck + side * person.shoulders * h
    l_hip, r_hip = pelvis - side * person.hips * h, pelvis + side * person.hips * h
    # Left limbs hang towards -x at rest, so a positive angle raises the left arm outwards.
    l_elb = limb(l_sho, -pose.l_sho + pose.lean, person.upper_arm)
    l_wri = limb(l_elb, -(pose.l_sho + pose.l_elb) + pose.lean, person.forearm)
    r_elb = limb(r_sho, -pose.r_sho + pose.lean, person.upper_arm)
    r_wri = limb(r_elb, -(pose.r_sho + pose.r_elb) + pose.lean, person.forearm)
    l_kne = limb(l_hip, -pose.l_hip, person.thigh)
    l_ank = limb(l_kne, -(pose.l_hip + pose.l_knee), person.shin)
    r_kne = limb(r_hip, -pose.r_hip, person.thigh)
    r_ank = limb(r_kne, -(pose.r_hip + pose.r_knee), person.shin)
    return np.stack([head, neck, pelvis, l_sho, l_elb, l_wri, r_sho, r_elb, r_wri, l_hip, l_kne, l_ank, r_hip,
                     r_kne, r_ank])


def _texture(person: Person, size: int) -> np.ndarray:
    """Multiplicative clothing pattern ``(size, size, 1)`` in [0.55, 1]."""
    yy, xx = np.mgrid[0:size, 0:size]
    p = person.period
    pattern = {0: np.zeros((size, size)), 1: (yy // p) % 2, 2: (xx // p) % 2,
               3: ((yy // p) + (xx // p)) % 2}[person.texture]
    return (1.0 - 0.45 * pattern.astype(np.float32))[..., None]


def render_frame(background: np.ndarray, person: Person, joints: np.ndarray, face: np.ndarray,
                 texture: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``person`` at ``joints`` over ``background`` (``(H, W, 3)`` uint8).

    Returns the frame ``(H, W, 3)`` uint8 and the person mask ``(H, W)`` bool.
    """
    import cv2

    size = background.shape[0]
    scale = 16  # sub-pixel precision for cv2 drawing (4 fractional bits)
    thick = max(2, int(round(person.thickness * height)))
    body = np.zeros((size, size, 3), np.uint8)
    shirt_mask = np.zeros((size, size), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    pts = np.round(joints * scale).astype(np.int32)

    def seg(img: np.ndarray, a: int, b: int, colour: tuple[int, ...], t: int) -> None:
        cv2.line(img, tuple(pts[a]), tuple(pts[b]), colour, t, cv2.LINE_8, shift=4)

    torso = np.stack([pts[3], pts[6], pts[12], pts[9]])
    for img, c in ((shirt_mask, (1,)), (mask, (1,))):
        cv2.fillConvexPoly(img, torso, c, cv2.LINE_8, shift=4)
        seg(img, 3, 4, c, thick)
        seg(img, 6, 7, c, thick)
    for a, b in ((9, 10), (10, 11), (12, 13), (13, 14)):
        seg(body, a, b, person.trousers, thick + 1)
        seg(mask, a, b, (1,), thick + 1)
    for a, b in ((4, 5), (7, 8), (1, 0)):
        seg(body, a, b, person.skin, thick)
        seg(mask, a, b, (1,), thick)
    shirt = (np.array(person.shirt, np.float32) * texture).astype(np.uint8)
    body = np.where(shirt_mask[..., None] > 0, shirt, body)
    # Head: a skin disc with the identity's face crop inside.
    r = max(2, int(round(person.head * height)))
    cx, cy = int(round(joints[0, 0])), int(round(joints[0, 1]))
    head_mask = np.zeros((size, size), np.uint8)
    cv2.circle(head_mask, (cx, cy), r, 1, -1)
    mask |= head_mask
    face_img = cv2.resize(face, (2 * r + 1, 2 * r + 1), interpolation=cv2.INTER_AREA)
    tinted = ((face_img[..., None] * 0.6 + 0.4) * np.array(person.skin, np.float32)).clip(0, 255).astype(np.uint8)
    head_rgb = np.zeros_like(body)
    y0, x0 = cy - r, cx - r
    ys, xs = slice(max(0, y0), min(size, y0 + 2 * r + 1)), slice(max(0, x0), min(size, x0 + 2 * r + 1))
    if ys.stop > ys.start and xs.stop > xs.start:
        head_rgb[ys, xs] = tinted[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
    body = np.where(head_mask[..., None] > 0, head_rgb, body)
    frame = np.where(mask[..., None] > 0, body, background)
    return frame, mask.astype(bool)


@dataclass(frozen=True)
class ClipSpec:
    """What to render: an identity, an action, and the clip's own randomness (phase, position, background)."""

    person: int
    action: int
    phase: float
    x: float  # standing position, fraction of the width
    background: int
    bg_scale: float
    bg_x: float
    bg_y: float
    shake: tuple[tuple[int, int], ...] = ()  # per-frame background offset (dx, dy) in pixels: a hand-held camera


def render_clip(spec: ClipSpec, person: Person, photos: list[np.ndarray], faces: np.ndarray, frames: int,
                size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one clip.

    Returns frames ``(T, H, W, 3)`` uint8, masks ``(T, H, W)`` bool and keypoints ``(T, J, 2)`` float32 (pixels).
    """
    import cv2

    photo = photos[spec.background]
    ph, pw = photo.shape[:2]
    side = int(min(ph, pw) * spec.bg_scale)
    y0 = int((ph - side) * spec.bg_y)
    x0 = int((pw - side) * spec.bg_x)
    pad = max([0, *(max(abs(dx), abs(dy)) for dx, dy in spec.shake)])
    big = cv2.resize(np.ascontiguousarray(photo[y0:y0 + side, x0:x0 + side, :3]), (size + 2 * pad, size + 2 * pad),
                     interpolation=cv2.INTER_AREA)
    height = 0.62 * size
    leg = person.thigh + person.shin
    root = (spec.x * size, size * 0.96 - leg * height)
    motion = list(ACTIONS.values())[spec.action]
    texture = _texture(person, size)
    face = faces[person.face].astype(np.float32)
    out = np.empty((frames, size, size, 3), np.uint8)
    masks = np.empty((frames, size, size), bool)
    kps = np.empty((frames, len(JOINTS), 2), np.float32)
    for t in range(frames):
        phase = spec.phase + 2 * math.pi * person.style.tempo * t / frames
        wrapped = phase % (2 * math.pi)
        joints = skeleton(person, motion(wrapped, person.style), root, height)
        dx, dy = spec.shake[t] if spec.shake else (0, 0)
        bg = np.ascontiguousarray(big[pad + dy: pad + dy + size, pad + dx: pad + dx + size])
        out[t], masks[t] = render_frame(bg, person, joints, face, texture, height)
        kps[t] = joints
    return out, masks, kps


@dataclass(frozen=True)
class ActionClips:
    """A generated set: ``clips (N, T, H, W, 3)`` uint8, ``masks (N, T, H, W)`` bool, ``keypoints (N, T, J, 2)``
    float32 pixels (x, y), ``actions (N,)`` and ``identities (N,)`` int64."""

    clips: np.ndarray
    masks: np.ndarray
    keypoints: np.ndarray
    actions: np.ndarray
    identities: np.ndarray


def _photos() -> list[np.ndarray]:
    from privbench.data.embedded import _package_photos

    # The astronaut portrait is left out: a real face in the background would confound residual-face counts.
    return [p[..., :3] for name, p in _package_photos().items() if name != "astronaut"]


def _faces() -> np.ndarray:
    import skimage.data as skd

    return skd.lfw_subset()[:100]  # the 100 face crops, (100, 25, 25) in [0, 1]


def _shake(rng: np.random.Generator, frames: int, amplitude: int) -> tuple[tuple[int, int], ...]:
    """A random walk of the camera, each step -1, 0 or +1 pixel per axis, kept within ``amplitude`` pixels."""
    if amplitude == 0:
        return ()
    steps = rng.integers(-1, 2, size=(frames, 2))
    steps[0] = 0
    walk = np.clip(np.cumsum(steps, axis=0), -amplitude, amplitude)
    return tuple((int(dx), int(dy)) for dx, dy in walk)


def generate(identities: int, clips_per_identity: int, frames: int = 16, size: int = 64, seed: int = 0,
             shake: int = 1) -> ActionClips:
    """Generate ``identities × clips_per_identity`` clips; each identity performs every action about equally often.

    Deterministic in ``seed`` (identities, actions, phases, positions, backgrounds and camera shake all come from
    it). ``shake``: the camera's random walk stays within this many pixels (0: a fixed camera), so the background
    moves a little, as with a hand-held camera, and is not removed by subtracting a clip's mean frame.
    """
    if identities < 1 or clips_per_identity < 1 or frames < 2 or size < 16 or not 0 <= shake <= size // 8:
        raise ValueError("synthetic-actions needs identities >= 1, clips_per_identity >= 1, frames >= 2, size >= 16 "
                         "and 0 <= shake <= size / 8")
    rng = np.random.default_rng(seed)
    photos, faces = _photos(), _faces()
    people = [sample_person(rng, len(faces)) for _ in range(identities)]
    n = identities * clips_per_identity
    clips = np.empty((n, frames, size, size, 3), np.uint8)
    masks = np.empty((n, frames, size, size), bool)
    kps = np.empty((n, frames, len(JOINTS), 2), np.float32)
    actions = np.empty(n, np.int64)
    ids = np.repeat(np.arange(identities, dtype=np.int64), clips_per_identity)
    for i in range(n):
        if i % clips_per_identity == 0:  # a balanced, shuffled action schedule per identity
            schedule = rng.permutation(np.resize(rng.permutation(len(ACTIONS)), clips_per_identity))
        action = int(schedule[i % clips_per_identity])
        spec = ClipSpec(person=int(ids[i]), action=action, phase=float(rng.uniform(0, 2 * math.pi)),
                        x=float(rng.uniform(0.3, 0.7)), background=int(rng.integers(len(photos))),
                        bg_scale=float(rng.uniform(0.3, 0.8)), bg_x=float(rng.uniform()), bg_y=float(rng.uniform()),
                        shake=_shake(rng, frames, shake))
        clips[i], masks[i], kps[i] = render_clip(spec, people[spec.person], photos, faces, frames, size)
        actions[i] = action
    return ActionClips(clips, masks, kps, actions, ids)


def _pool(options: Mapping[str, Any]) -> Pool:
    known = {"identities", "clips_per_identity", "frames", "size", "seed", "shake"}
    unknown = set(options) - known
    if unknown:
        raise InputError(f"synthetic-actions: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
    try:
        made = generate(int(options.get("identities", 60)), int(options.get("clips_per_identity", 10)),
                        int(options.get("frames", 16)), int(options.get("size", 48)), int(options.get("seed", 0)),
                        int(options.get("shake", 1)))
    except ValueError as e:
        raise InputError(str(e)) from None
    clips = torch.from_numpy(made.clips).permute(0, 1, 4, 2, 3).float().div_(255.0)
    return Pool(clips, torch.from_numpy(made.actions), len(ACTIONS), identities=torch.from_numpy(made.identities),
                masks=torch.from_numpy(made.masks).unsqueeze(2), keypoints=torch.from_numpy(made.keypoints))


@DATASETS.register("synthetic-actions")
def synthetic_actions(options: Mapping[str, Any]) -> Pool:
    """Procedural action clips of articulated people over real package photos: ``(T=16, 3, 48, 48)``, 10 actions,
    60 identities × 10 clips, with identities, person masks and keypoints (options: identities,
    clips_per_identity, frames, size, seed, shake)."""
    return _pool(options)
