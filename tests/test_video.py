"""The video modality: the synthetic-actions generator, the PyAV folder loader on files the test writes,
identity-disjoint splits, frame-averaged metrics, re-identification scores and their chance levels, and the
person-removing defenses (avatar, redaction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Modality
from privbench.core.specs import SplitConfig
from privbench.data import load_splits
from privbench.data.actions import ACTIONS, JOINTS, generate
from privbench.metrics.identity import linkage_scores
from privbench.metrics.image import psnr, reconstruction_metrics, ssim
from privbench.run.scoring import gallery_permutation

SMALL = {"identities": 12, "clips_per_identity": 10, "frames": 8, "size": 32}


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic-actions", SplitConfig(private=60, aux=30, test=30, targets=20, scale="fit"), 0,
                       SMALL)


def test_generator_is_seeded_balanced_and_annotated() -> None:
    a, b, c = generate(4, 10, 8, 32, seed=0), generate(4, 10, 8, 32, seed=0), generate(4, 10, 8, 32, seed=1)
    assert np.array_equal(a.clips, b.clips) and not np.array_equal(a.clips, c.clips)
    assert a.clips.shape == (40, 8, 32, 32, 3) and a.keypoints.shape == (40, 8, len(JOINTS), 2)
    assert np.bincount(a.actions, minlength=len(ACTIONS)).min() >= 3  # every action, about equally often
    # the mask covers the person: the keypoints of visible joints fall on masked pixels
    x, y = np.round(a.keypoints[..., 2, :]).astype(int).T  # pelvis
    inside = (0 <= x) & (x < 32) & (0 <= y) & (y < 32)
    n, t = np.nonzero(inside.T)
    assert a.masks[n, t, y.T[n, t], x.T[n, t]].mean() > 0.95
    assert 0.03 < a.masks.mean() < 0.4
    # the person moves: with a fixed camera, frames differ inside the mask and nowhere else; a shaking camera
    # (the default, 1 px) moves the background too
    fixed = generate(4, 10, 8, 32, seed=0, shake=0)
    for clips, masks, still in ((fixed.clips, fixed.masks, True), (a.clips, a.masks, False)):
        diff = np.abs(np.diff(clips.astype(np.float32), axis=1)).mean(-1)
        moving = masks[:, 1:] | masks[:, :-1]
        assert diff[moving].mean() > 2 * diff[~moving].mean()
        assert (diff[~moving].max() == 0) == still


def test_splits_are_identity_disjoint_and_keep_a_gallery_clip_per_target(splits) -> None:
    ids = {k: set(getattr(splits, k).identities.tolist()) for k in ("private", "aux", "test")}
    assert not (ids["private"] & ids["aux"]) and not (ids["private"] & ids["test"]) and not (ids["aux"] & ids["test"])
    assert splits.private.is_video and Modality.of(splits.info.shape) is Modality.VIDEO
    assert splits.private.masks.shape == (60, 8, 1, 32, 32)
    gallery, relevance = gallery_permutation(splits, 0)
    assert isinstance(gallery, ImageSet) and gallery.identities is None and len(gallery) == 60 - 20
    assert relevance.shape == (20, 40) and bool(relevance.any(1).all())
    target_ids = splits.private.identities[splits.targets]
    assert bool((relevance.sum(1) > 0).all()) and len(set(target_ids.tolist())) >= 5


def test_identity_splits_name_the_field_when_too_large() -> None:
    with pytest.raises(InputError, match="splits.private"):
        load_splits("synthetic-actions", SplitConfig(private=500, aux=30, test=30, targets=5), 0, SMALL)


def test_frame_metrics_average_over_frames() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, 3, 16, 16, generator=g)
    y = (x + 0.05 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    per_frame = torch.stack([psnr(x[:, t], y[:, t]) for t in range(4)], 1)
    assert torch.allclose(psnr(x, y), per_frame.mean(1))
    assert ssim(x, y).shape == (3,)
    values, _ = reconstruction_metrics(x, y, use_lpips=False)
    assert values["psnr"] == pytest.approx(float(per_frame.mean()), rel=1e-5)


def test_reid_chance_levels_match_random_rankings() -> None:
    g = torch.Generator().manual_seed(0)
    gallery_ids = torch.arange(30) % 6
    query_ids = torch.randint(0, 6, (4000,), generator=g)
    relevance = query_ids[:, None] == gallery_ids[None, :]
    rankings = torch.stack([torch.randperm(30, generator=g) for _ in range(4000)])
    s = linkage_scores(rankings, relevance, 30)
    for k in ("top1", "top5", "map"):
        assert s[k] == pytest.approx(s[f"chance_{k}"], abs=0.02)
    perfect = torch.argsort((~relevance).int(), dim=1, stable=True)
    assert linkage_scores(perfect, relevance, 30)["map"] == pytest.approx(1.0)


def _person_stats(clips: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean colour inside the person mask per clip ``(N, 3)``."""
    m = masks.expand_as(clips).float()
    return (clips * m).sum((1, 3, 4)) / m.sum((1, 3, 4)).clamp_min(1)


def test_avatar_replaces_the_person_and_restores_the_background(splits) -> None:
    from privbench.defenses.avatar import Avatar

    x = splits.private.subset(torch.arange(10))
    out = Avatar(Avatar.Params()).transform(x)
    assert out.shape == x.images.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    # inside the person: only the avatar's colour or restored background, not the person's clothes
    person = _person_stats(out, x.masks)
    magenta = torch.tensor([1.0, 0.0, 1.0])
    original = _person_stats(x.images, x.masks)
    assert float((person - original).abs().mean()) > 0.1
    assert float((person - magenta).abs().mean()) < float((original - magenta).abs().mean())
    # away from the person the frame is kept (a static background restored by the median plate)
    far = ~torch.nn.functional.max_pool3d(x.masks.float().squeeze(2), (1, 9, 9), 1, (0, 4, 4)).bool()
    diff = (out - x.images).abs().mean(2)
    assert float(diff[far].mean()) < 0.03
    with pytest.raises(InputError, match="annotated"):
        Avatar(Avatar.Params()).transform(x.images)  # ground truth needs the annotations


def test_retargeting_removes_bone_length_differences() -> None:
    from privbench.defenses.avatar import BONES, CANONICAL, retarget

    g = np.random.default_rng(0)
    kps = g.uniform(0, 48, size=(5, len(JOINTS), 2))
    out = retarget(kps, 48.0)
    j = {n: i for i, n in enumerate(JOINTS)}
    for parent, child in BONES:
        length = np.linalg.norm(out[:, j[child]] - out[:, j[parent]], axis=-1)
        assert np.allclose(length, CANONICAL[child] * 48.0)


@pytest.mark.parametrize("defense", ["person-blur", "person-pixelate", "person-box"])
def test_redaction_changes_only_the_person_region(splits, defense: str) -> None:
    from privbench.core.registry import DEFENSES

    x = splits.private.subset(torch.arange(6))
    cls = DEFENSES.get(defense)
    out = cls(cls.Params()).transform(x)
    region = torch.nn.functional.max_pool3d(x.masks.float().squeeze(2), (1, 3, 3), 1, (0, 1, 1)).bool()
    if defense == "person-box":
        assert float(out.mean(2)[x.masks.squeeze(2)].max()) == 0.0  # black over the person
    else:
        assert float((out - x.images).abs().mean(2)[region].mean()) > 0.01
    outside = (out - x.images).abs().mean(2)[~region]
    if defense != "person-box":  # the box also covers background inside the bounding box
        assert float(outside.max()) == 0.0


def _write_video(path: Path, frames: int, size: tuple[int, int] = (80, 60)) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        for t in range(frames):
            img = np.full((size[1], size[0], 3), (10 * t) % 256, np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def test_video_folder_reads_mixed_resolutions_and_skips_bad_files(tmp_path) -> None:
    from privbench.data.video import read_video_folder

    for cls in ("walk", "wave"):
        (tmp_path / cls).mkdir()
        _write_video(tmp_path / cls / f"v_{cls}_g01_c01.mp4", 20)
        _write_video(tmp_path / cls / f"v_{cls}_g02_c01.mp4", 20, size=(64, 96))
    (tmp_path / "walk" / "readme.txt").write_text("not a video")
    (tmp_path / "walk" / "v_walk_g03_c01.avi").write_bytes(b"\x00garbage" * 50)
    _write_video(tmp_path / "wave" / "v_wave_g03_c01.mp4", 3)  # too short
    (tmp_path / "wave" / "v_wave_g04_c01.mp4").write_bytes(b"")  # zero bytes
    folder = read_video_folder(tmp_path, frames=8, size=32, step=2)
    assert folder.clips.shape == (4, 8, 32, 32, 3) and folder.labels.tolist() == [0, 0, 1, 1]
    assert folder.identities is not None and folder.identities.tolist() == [0, 1, 2, 3]  # (class, group)
    skipped = {Path(f).name for f, _ in folder.skipped}
    assert skipped == {"readme.txt", "v_walk_g03_c01.avi", "v_wave_g03_c01.mp4", "v_wave_g04_c01.mp4"}
    with pytest.raises(InputError, match="does not exist"):
        read_video_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("")
    with pytest.raises(InputError, match="no readable video"):
        read_video_folder(tmp_path)


def test_video_case_counts_detections_and_names_the_missing_file(tmp_path) -> None:
    import json

    from privbench.run.video_case import CaseConfig, run_case

    clips = generate(1, 1, 8, 96, seed=0).clips[0]
    path = tmp_path / "walk.mp4"
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 96, 96, "yuv420p"
        for frame in clips:
            for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    summary = run_case(CaseConfig("person-box", {"estimator": "hog"}, str(path), frames=6, step=1, width=96),
                       tmp_path / "board" / "video_case")
    saved = json.loads((tmp_path / "board" / "video_case" / "video_case.json").read_text())
    assert saved["detectors"].keys() == summary["detectors"].keys() >= {"fullbody", "upperbody", "face", "hog"}
    for d in saved["detectors"].values():
        assert len(d["per_frame_before"]) == 6 and d["before"] == sum(d["per_frame_before"])
    assert (tmp_path / "board" / "video_case" / "video_case.png").stat().st_size > 0
    from privbench.report.tables import video_case_table

    table = video_case_table(tmp_path / "board")  # the board's report shows the case
    assert table is not None and len(table.rows) == 4 and table.rows[0].thumbnails
    assert video_case_table(tmp_path / "nowhere") is None
    (tmp_path / "board" / "video_case" / "video_case.json").write_text("{}")
    with pytest.raises(InputError, match="not a video-case summary"):
        video_case_table(tmp_path / "board")
    with pytest.raises(InputError, match="apt-get install opencv-doc"):
        run_case(CaseConfig("avatar", {}, str(tmp_path / "elsewhere" / "vtest.avi")), tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written
    with pytest.raises(InputError, match="handles image"):
        run_case(CaseConfig("blur", {}, str(path), frames=4, step=1, width=96), tmp_path / "y")


def test_avatar_diffusion_refinement_from_a_tiny_local_pipeline(tmp_path, splits) -> None:
    """SDEdit refinement loads a local unconditional DDPM (a tiny random one here), changes only the rewritten
    region, and a missing directory is an error naming it."""
    from diffusers import DDPMScheduler, UNet2DModel

    from privbench.defenses.avatar import Avatar

    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    unet.save_pretrained(tmp_path / "unet")
    DDPMScheduler(num_train_timesteps=50).save_pretrained(tmp_path / "scheduler")
    x = splits.private.subset(torch.arange(3))
    plain = Avatar(Avatar.Params()).transform(x)
    refined = Avatar(Avatar.Params(refine_dir=str(tmp_path), refine_steps=3, refine_strength=0.5)).transform(
        x, torch.Generator().manual_seed(0))
    assert refined.shape == plain.shape and torch.isfinite(refined).all()
    changed = (refined - plain).abs().amax(2) > 1e-6
    # allowed: the person's mask dilated by the defense's 1 pixel, and wherever the avatar rewrote the frame
    person = torch.nn.functional.max_pool3d(x.masks.float().squeeze(2), (1, 3, 3), 1, (0, 1, 1)).bool()
    rewritten = person | ((plain - x.images).abs().amax(2) > 1e-6)
    assert bool(changed.any()) and not bool((changed & ~rewritten).any())
    with pytest.raises(InputError, match="refine_dir"):
        Avatar.Params(refine_dir=str(tmp_path / "missing"))
