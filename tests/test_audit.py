"""`privbench audit`: planted near-copies are flagged at a low false-flag rate, unrelated releases score ~0 with
CIs that include 0, an aligned but weakly anonymised release links, bad input is skipped or refused without a
partial report, exit codes follow --fail-on, the loader survives 10,000 fuzzed files, and the HTML report works in
a real browser."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from privbench.audit.loader import Unreadable, load_image_bytes, read_folder

ROOT = Path(__file__).resolve().parent.parent


def scene(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A synthetic image: a colour gradient with 3-6 random ellipses and rectangles."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    img = Image.fromarray(((1 - t) * a + t * b).repeat(size, 1).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = (int(v) for v in rng.integers(-10, size, 2))
        w, h = (int(v) for v in rng.integers(8, 40, 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(img)


def _near_copy(a: np.ndarray) -> bytes:
    """JPEG re-encoding (quality 75) of the image shifted by one pixel."""
    buf = io.BytesIO()
    Image.fromarray(np.roll(a, 1, axis=1)).save(buf, "JPEG", quality=75)
    return buf.getvalue()


def _save(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _audit(release: Path, originals: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "privbench", "audit", str(release), "--originals", str(originals),
                           "--out", str(out), "--no-progress", "--detect-max", "60", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 originals; a release of 30 planted near-copies among 270 clean synthetic images; 300 aux images."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    originals = [scene(rng) for _ in range(300)]
    for i, a in enumerate(originals):
        _save(root / "orig" / f"o{i:03d}.png", a)
    (root / "rel").mkdir()
    for i in rng.choice(300, 30, replace=False):
        (root / "rel" / f"planted{i:03d}.jpg").write_bytes(_near_copy(originals[i]))
    for i in range(270):
        _save(root / "rel" / f"clean{i:03d}.png", scene(rng))
    for i in range(300):
        _save(root / "aux" / f"x{i:03d}.png", scene(rng))
    return root


@pytest.mark.parametrize("aux", [False, True], ids=["leave-one-out", "aux"])
def test_planted_near_copies_are_flagged_and_clean_images_are_not(planted: Path, tmp_path: Path, aux: bool) -> None:
    r = _audit(planted / "rel", planted / "orig", tmp_path / "report", "--fail-on", "near-copy=0.05",
               "--false-flag-rate", "0.02", *(["--aux", str(planted / "aux")] if aux else []))
    assert r.returncode == 1, r.stderr  # ~10% of the release are copies: over the 0.05 threshold
    rows = [row for row in csv.DictReader(open(tmp_path / "report" / "flagged.csv")) if row["risk"] == "near-copy"]
    plant = [int(row["flagged"]) for row in rows if row["release"].startswith("planted")]
    clean = [int(row["flagged"]) for row in rows if row["release"].startswith("clean")]
    assert len(plant) == 30 and len(clean) == 270
    assert np.mean(plant) >= 0.9 and np.mean(clean) < 0.05
    for row in rows:
        if row["release"].startswith("planted") and int(row["flagged"]):
            assert row["original"] == f"o{row['release'][7:10]}.png"  # flagged against its own original
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    risk = summary["risks"]["near-copy"]
    assert risk["kind"] == "calibrated" and 0.05 < risk["value"] < 0.15 and risk["ci95"][0] > 0
    assert summary["failures"] == [f"near-copy: {risk['value']:.3f} > 0.05"]


def test_an_unrelated_release_scores_zero_within_its_ci(planted: Path, tmp_path: Path) -> None:
    """Fresh images of the same population, named like the originals (so linkage is measured too)."""
    rel = tmp_path / "rel"
    rng = np.random.default_rng(1)
    for i in range(200):
        _save(rel / f"o{i:03d}.png", scene(rng))
    r = _audit(rel, planted / "orig", tmp_path / "report", "--fail-on", "near-copy=0.05", "--false-flag-rate", "0.02")
    assert r.returncode == 0, r.stdout + r.stderr
    risks = json.loads((tmp_path / "report" / "summary.json").read_text())["risks"]
    for name in ("near-copy", "linkage"):
        lo, hi = risks[name]["ci95"]
        assert risks[name]["kind"] == "calibrated" and lo <= 0.0 <= hi, (name, risks[name])


def test_an_aligned_blurred_release_links_to_its_originals(planted: Path, tmp_path: Path) -> None:
    rel = tmp_path / "rel"
    for i, path in enumerate(sorted((planted / "orig").iterdir())[:100]):
        blurred = Image.open(path).filter(ImageFilter.GaussianBlur(2))
        _save(rel / path.name, np.asarray(blurred))
    r = _audit(rel, planted / "orig", tmp_path / "report")
    assert r.returncode == 0, r.stderr
    link = json.loads((tmp_path / "report" / "summary.json").read_text())["risks"]["linkage"]
    assert link["value"] > 0.8 and link["ci95"][0] > 0.5 and link["baseline"] == pytest.approx(1 / 300)


def _bad_inputs(root: Path, outside: Path) -> dict[str, str]:
    """Files the loader must skip, with the reason each should give."""
    root.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    Image.fromarray(scene(np.random.default_rng(2))).save(good, "PNG")
    data = good.getvalue()
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "text.jpg").write_text("this is not an image\n")
    (root / "pickle.png").write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n" * 4)
    outside.write_bytes(data)
    (root / "escape.png").symlink_to(outside)
    return {"empty.png": "empty file", "truncated.png": "not a readable image", "text.jpg": "not a readable image",
            "pickle.png": "not a readable image", "escape.png": "symlink pointing outside"}


def test_bad_files_are_skipped_with_their_reasons_and_mixed_modes_are_normalised(tmp_path: Path) -> None:
    root = tmp_path / "release"
    expected = _bad_inputs(root, tmp_path / "outside.png")
    rng = np.random.default_rng(3)
    a = scene(rng, 80)
    Image.fromarray(a).convert("L").save(root / "grey.png")
    Image.fromarray(a).convert("P").save(root / "palette.gif")
    Image.fromarray(np.dstack([a, np.full(a.shape[:2], 128, np.uint8)])).save(root / "alpha.png")
    Image.fromarray(a).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray((a[..., 0].astype(np.uint16) * 257)).save(root / "deep.png")
    Image.fromarray(scene(rng, 300)[:, :200]).save(root / "big-landscape.webp")
    folder = read_folder(root, size=32)
    assert {s.path: s.reason for s in folder.skipped}.keys() == expected.keys()
    for s in folder.skipped:
        assert expected[s.path] in s.reason, (s.path, s.reason)
    assert sorted(folder.names) == ["alpha.png", "big-landscape.webp", "cmyk.jpg", "deep.png", "grey.png",
                                    "palette.gif"]
    assert folder.images.shape == (6, 32, 32, 3) and folder.images.dtype == np.uint8


def test_decompression_bombs_are_refused_from_the_header(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("L", (300, 300)).save(buf, "PNG")
    with pytest.raises(Unreadable, match="exceeds the limit of 10000"):
        load_image_bytes(buf.getvalue(), 32, max_pixels=10_000)
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # 144 MP of zeros: ~20 kB of PNG
    with pytest.raises(Unreadable, match="pixels exceeds the limit|decompression bomb"):
        load_image_bytes(buf.getvalue(), 32)


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable", "bad-fail-on", "unknown-risk"])
def test_bad_input_exits_2_without_a_report(planted: Path, tmp_path: Path, case: str) -> None:
    rel, extra = tmp_path / "rel", []
    if case == "empty":
        rel.mkdir()
    elif case == "unreadable":
        _bad_inputs(rel, tmp_path / "outside.png")
    elif case in ("bad-fail-on", "unknown-risk"):
        rel = planted / "rel"
        extra = ["--fail-on", "near-copy>0.1" if case == "bad-fail-on" else "vibes=0.1"]
    r = _audit(rel, planted / "orig", tmp_path / "report", *extra)
    assert r.returncode == 2 and r.stderr.startswith("error: "), r.stderr
    assert not (tmp_path / "report").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no half-written temp dir


def test_the_loader_survives_thousands_of_fuzzed_files(request) -> None:
    """2,000 fuzzed files by default, 10,000 with --runslow (the same derandomised stream, longer)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    seeds = []
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(scene(np.random.default_rng(4), 24)).save(buf, fmt)
        seeds.append(buf.getvalue())
    outcomes = {"read": 0, "skipped": 0}

    @st.composite
    def files(draw: st.DrawFn) -> bytes:
        if draw(st.booleans()):
            return draw(st.binary(max_size=512))
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 8))):  # flip bytes (headers included), then maybe truncate
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data[: draw(st.integers(0, len(data)))])

    examples = 10_000 if request.config.getoption("--runslow") else 2_000

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(files())
    def check(data: bytes) -> None:
        try:
            image, _ = load_image_bytes(data, 16)
        except Unreadable:
            outcomes["skipped"] += 1
            return
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        outcomes["read"] += 1

    check()
    assert sum(outcomes.values()) >= examples and outcomes["skipped"] > 0 and outcomes["read"] > 0


def test_the_html_report_renders_in_a_real_browser(planted: Path, tmp_path: Path, browser) -> None:
    r = _audit(planted / "rel", planted / "orig", tmp_path / "report", "--fail-on", "near-copy=0.05",
               "--false-flag-rate", "0.02")
    assert r.returncode == 1, r.stderr
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("request", lambda req: req.url.startswith(("file:", "data:")) or problems.append(f"fetch {req.url}"))
    page.goto((tmp_path / "report" / "report.html").as_uri())
    risks = page.eval_on_selector_all("#risks tbody tr", "trs => trs.map(tr => tr.dataset.risk)")
    assert risks == ["near-copy", "linkage", "faces", "people"]
    assert "near-copy" in page.inner_text("#verdict")
    widths = page.eval_on_selector_all(".pairs[data-risk='near-copy'] img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) >= 2 and all(w == 64 for w in widths)  # release and original thumbnails side by side
    assert not problems, problems
    page.close()



def _digits(root: Path, idx: np.ndarray, images: np.ndarray, labels: np.ndarray) -> list[str]:
    rows = []
    for i in idx:
        name = f"d{i:04d}.png"
        _save(root / name, np.asarray(Image.fromarray(images[i]).resize((32, 32), Image.Resampling.NEAREST)))
        rows.append(f"{name},{labels[i]}")
    return rows


def _train(folder_dir: Path, labels: dict[str, int], seed: int):
    import torch

    from privbench.audit.loader import read_folder as read
    from privbench.core.images import ImageSet
    from privbench.models import build_model
    from privbench.models.train import train_classifier

    f = read(folder_dir)
    x = torch.from_numpy(f.images).permute(0, 3, 1, 2).float() / 255.0
    x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="area")
    y = torch.tensor([labels[n] for n in f.names])
    model = build_model("convnet", 1, 10, width=8)
    train_classifier(model, ImageSet(x, y), epochs=60, batch_size=32, lr=0.003,
                     generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"))
    return model


def test_membership_of_a_released_model_is_measured_against_chance(tmp_path: Path) -> None:
    import torch
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16 * 255).astype(np.uint8)
    order = np.random.default_rng(5).permutation(len(images))
    rows = ["file,label"]
    rows += _digits(tmp_path / "orig", order[:120], images, d.target)
    rows += _digits(tmp_path / "aux", order[120:240], images, d.target)
    _digits(tmp_path / "other", order[240:360], images, d.target)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    labels = {r.split(",")[0]: int(r.split(",")[1]) for r in rows[1:]}
    labels.update({f"d{i:04d}.png": int(d.target[i]) for i in order[240:360]})
    results = {}
    for name, trained_on in (("member", "orig"), ("outsider", "other")):
        torch.save(_train(tmp_path / trained_on, labels, 0).state_dict(), tmp_path / f"{name}.pt")
        r = _audit(tmp_path / "orig", tmp_path / "orig", tmp_path / f"report-{name}", "--aux", str(tmp_path / "aux"),
                   "--model", str(tmp_path / f"{name}.pt"), "--model-width", "8", "--labels",
                   str(tmp_path / "labels.csv"), "--fail-on", "membership=0.2")
        results[name] = (r.returncode, json.loads((tmp_path / f"report-{name}" / "summary.json").read_text()))
    code, member = results["member"]
    risk = member["risks"]["membership"]
    assert code == 1 and risk["value"] > 0.3 and risk["ci95"][0] > 0, risk
    code, outsider = results["outsider"]
    risk = outsider["risks"]["membership"]
    assert code == 0 and risk["ci95"][0] <= 0 <= risk["ci95"][1], risk


def test_a_pickled_model_is_refused(tmp_path: Path) -> None:
    import torch

    marker, evil = tmp_path / "ran", tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, evil)
    rng = np.random.default_rng(6)
    for d in ("orig", "aux"):
        for i in range(12):
            _save(tmp_path / d / f"i{i}.png", scene(rng))
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"i{i}.png,0\n" for i in range(12)))
    r = _audit(tmp_path / "orig", tmp_path / "orig", tmp_path / "report", "--aux", str(tmp_path / "aux"),
               "--model", str(evil), "--labels", str(tmp_path / "labels.csv"))
    assert r.returncode == 2 and "not a weights-only torch checkpoint" in r.stderr, r.stderr
    assert not marker.exists() and not (tmp_path / "report").exists()


def test_out_never_replaces_an_input_or_a_foreign_directory(planted: Path, tmp_path: Path) -> None:
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    for out in (precious, planted / "rel" / "report", planted / "orig"):
        r = _audit(planted / "rel", planted / "orig", out)
        assert r.returncode == 2 and "--out" in r.stderr, r.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"
    r = _audit(planted / "rel", planted / "orig", tmp_path / "report", "--detect-max", "5")
    assert r.returncode == 0
    r = _audit(planted / "rel", planted / "orig", tmp_path / "report", "--detect-max", "5")  # an earlier one is replaced
    assert r.returncode == 0 and (tmp_path / "report" / "summary.json").is_file()


def test_too_small_a_baseline_says_so_instead_of_scoring_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    originals = [scene(rng) for _ in range(60)]
    for i, a in enumerate(originals):
        _save(tmp_path / "orig" / f"o{i}.png", a)
        (tmp_path / "rel").mkdir(exist_ok=True)
        (tmp_path / "rel" / f"copy{i}.jpg").write_bytes(_near_copy(a))
    r = _audit(tmp_path / "rel", tmp_path / "orig", tmp_path / "report", "--fail-on", "near-copy=0.5")
    risk = json.loads((tmp_path / "report" / "summary.json").read_text())["risks"]["near-copy"]
    assert risk["value"] is None and risk["reason"].startswith("could not test at this rate")
    assert risk["detail"]["lowest_rate"] == pytest.approx(1 / 61)  # what it could resolve: 60 images
    assert r.returncode == 1 and "near-copy: not measured" in r.stdout  # a gate never passes for want of a number
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| near-copy | could not test at this rate |" in report  # not "0", not "pass"
    assert "**Over threshold:** near-copy: not measured (could not test at this rate" in report
    r = _audit(tmp_path / "rel", tmp_path / "orig", tmp_path / "report", "--false-flag-rate", "0.2")
    risk = json.loads((tmp_path / "report" / "summary.json").read_text())["risks"]["near-copy"]
    assert risk["value"] > 0.8  # every release image is a copy


def test_hostile_geometry_and_formats(tmp_path: Path) -> None:
    strip = io.BytesIO()
    Image.new("L", (1, 200_000), 128).save(strip, "PNG")  # a 1-pixel strip: cropped before resizing
    image, desc = load_image_bytes(strip.getvalue(), 64)
    assert image.shape == (64, 64, 3) and desc == "1x200000 L"
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(Unreadable, match="not a readable image"):  # never handed to Ghostscript
        load_image_bytes(eps, 64)
