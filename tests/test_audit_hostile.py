"""`privbench audit` on hostile releases (docs/AUDIT.md, "Threat model"): a video that is really an ffconcat script
or a playlist naming files outside the release, directory symlinks out of it, symlink loops, video decompression
bombs and file names built to forge report lines. Each is a tiny synthetic release run through the real CLI
(``privbench audit``) or the loader the CLI calls, asserting the safe outcome."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from privbench.audit.loader import Unreadable, read_folder, read_video, scan, sniff_container
from privbench.core.textsafe import csv_cell, markdown_cell

ROOT = Path(__file__).resolve().parent.parent
SECRET = (255, 0, 255)  # the outside image's colour: no release image is magenta
OUTPUTS = ("report.html", "report.md", "flagged.csv", "summary.json")


def _scene(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A dark-to-light grey gradient with one random dark square: never close to magenta."""
    a = np.repeat(np.linspace(20, 200, size, dtype=np.uint8)[:, None], size, 1)
    x, y = (int(v) for v in rng.integers(0, size - 12, 2))
    a[y:y + 12, x:x + 12] = rng.integers(0, 60)
    return np.dstack([a, a, a])


def _tiny_release(root: Path, n: int = 12, seed: int = 0, prefix: str = "r") -> list[str]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"{prefix}{i:02d}.png" for i in range(n)]
    for name in names:
        Image.fromarray(_scene(rng)).save(root / name)
    return names


def _originals(root: Path) -> Path:
    _tiny_release(root / "orig", seed=1, prefix="o")  # not aligned with the release: no linkage rows
    return root / "orig"


def _audit(release: Path, originals: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "privbench", "audit", str(release), "--originals", str(originals),
                           "--out", str(out), "--no-progress", "--detect-max", "60"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def _outputs(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text(encoding="utf-8") for name in OUTPUTS}


def _skipped_md(report_md: str) -> dict[str, str]:
    """``report.md``'s skipped list as ``{escaped path: reason}`` (the lines after the heading)."""
    section = report_md.split("## Skipped files", 1)[1].splitlines()[2:]
    out = {}
    for line in section:
        assert line.startswith("- release: "), line
        path, reason = line[len("- release: "):].split(": ", 1)
        out[path] = reason
    return out


def _thumbnails(html: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"))
            for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _is_secret(a: np.ndarray) -> bool:
    return bool(np.abs(a.reshape(-1, 3).mean(0) - SECRET).max() < 40)


def test_an_ffconcat_mp4_and_a_directory_symlink_cannot_show_an_outside_image(tmp_path: Path) -> None:
    import av

    outside = tmp_path / "private"
    outside.mkdir()
    secret = outside / "ceo-passport.png"
    Image.new("RGB", (64, 64), SECRET).save(secret)
    rel = tmp_path / "release"
    names = _tiny_release(rel)
    (rel / "cam").symlink_to(outside, target_is_directory=True)
    (rel / "clip.mp4").write_text("ffconcat version 1.0\n" + "file 'cam/ceo-passport.png'\n" * 8)
    (rel / "abs.mkv").write_text("ffconcat version 1.0\n" + f"file '{secret}'\n" * 8)
    (rel / "list.mov").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\ncam/ceo-passport.png\n"
                                  "#EXT-X-ENDLIST\n")
    # the fixture is a working exploit: FFmpeg's own probing opens the concat script and decodes the outside image
    with av.open(str(rel / "clip.mp4")) as c:
        assert c.format.name == "concat"
        assert _is_secret(next(c.decode(video=0)).to_ndarray(format="rgb24"))

    folder = read_folder(rel, size=32)
    assert folder.names == names and not any(_is_secret(a) for a in folder.images)
    reasons = {s.path: s.reason for s in folder.skipped}
    for name in ("clip.mp4", "abs.mkv", "list.mov"):
        assert "not an MP4/QuickTime, Matroska/WebM or AVI container" in reasons[name], reasons
    assert "directory symlink pointing outside" in reasons["cam"] and "not followed" in reasons["cam"]

    r = _audit(rel, _originals(tmp_path), tmp_path / "report")
    assert r.returncode == 0, r.stderr
    text = _outputs(tmp_path / "report")
    for name, body in text.items():
        assert "ceo-passport" not in body, name
    summary = json.loads(text["summary.json"])["inputs"]["release"]
    assert summary == {"dir": str(rel), "images": 12, "skipped": 4}
    released = {row["release"] for row in csv.DictReader(io.StringIO(text["flagged.csv"]))}
    assert released == set(names)
    assert not any(_is_secret(a) for a in _thumbnails(text["report.html"]))
    skipped = _skipped_md(text["report.md"])
    assert set(skipped) == {"abs.mkv", "cam", "clip.mp4", "list.mov"}
    assert "not followed" in skipped["cam"]


def test_symlink_loops_and_directory_symlinks_are_skipped_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (32, 32), SECRET).save(outside / "x.png")
    rel = tmp_path / "release"
    names = _tiny_release(rel)
    (rel / "sub").mkdir()
    Image.fromarray(_scene(np.random.default_rng(9))).save(rel / "sub" / "deep.png")
    (rel / "self.png").symlink_to("self.png")
    (rel / "ping.png").symlink_to("pong.png")
    (rel / "pong.png").symlink_to("ping.png")
    (rel / "sub" / "up").symlink_to("..", target_is_directory=True)
    (rel / "again").symlink_to("sub", target_is_directory=True)
    (rel / "gone.png").symlink_to("missing.png")
    (rel / "out").symlink_to(outside, target_is_directory=True)
    (rel / "outfile.png").symlink_to(outside / "x.png")
    (rel / ".cache").mkdir()  # hidden: not audited, and said so (a leak could hide there)
    (rel / ".cache" / "leak.png").write_bytes((rel / names[0]).read_bytes())
    (rel / ".thumb.png").write_bytes((rel / names[0]).read_bytes())
    expected = {"self.png": "symlink loop", "ping.png": "symlink loop", "pong.png": "symlink loop",
                "sub/up": "symlink loop (a directory symlink to its own ancestor)",
                "again": "directory symlink inside the release; not followed",
                "gone.png": "dangling symlink", "out": "directory symlink pointing outside",
                "outfile.png": "symlink pointing outside", ".cache": "hidden; not audited (nor anything under it)",
                ".thumb.png": "hidden; not audited"}

    folder = read_folder(rel, size=32)
    assert folder.names == [*names, "sub/deep.png"]
    reasons = {s.path: s.reason for s in folder.skipped}
    assert reasons.keys() == expected.keys()
    for path, why in expected.items():
        assert why in reasons[path], (path, reasons[path])

    r = _audit(rel, _originals(tmp_path), tmp_path / "report")
    assert r.returncode in (0, 1), r.stderr  # a report, not a crash (3)
    text = _outputs(tmp_path / "report")
    skipped = _skipped_md(text["report.md"])
    assert skipped.keys() == expected.keys()
    for path, why in expected.items():
        assert markdown_cell(why) in skipped[path], (path, skipped[path])
    assert json.loads(text["summary.json"])["inputs"]["release"]["images"] == 13
    assert "x.png" not in text["flagged.csv"]


def test_a_directory_nested_deeper_than_the_recursion_limit_is_walked(tmp_path: Path) -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # deeper than the limit, yet a path well under PATH_MAX (xdist raises the limit)
    depth = 500
    deepest = tmp_path
    try:
        for _ in range(depth):  # Path.mkdir(parents=True) recurses too
            (deepest / "d").mkdir()
            deepest = deepest / "d"
        (deepest / "leaf.png").write_bytes(b"")
        files, skipped = scan(tmp_path)
        assert [p.name for p in files] == ["leaf.png"] and skipped == []
        assert len(files[0].relative_to(tmp_path).parts) == depth + 1
    finally:  # shutil.rmtree (and pytest's clean-up) recurse; unwind from the bottom
        sys.setrecursionlimit(limit)
        (deepest / "leaf.png").unlink(missing_ok=True)
        d = deepest
        while d != tmp_path:
            d.rmdir()
            d = d.parent


def _mjpeg(path: Path, sides: list[int], header: int) -> None:
    """An MP4 of grey JPEG frames of the given sides, muxed without encoding (8200² = 67 MP, over the 64 MP limit,
    is ~0.8 MB on disk), its header claiming ``header`` × ``header``."""
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("mjpeg", rate=5)
        s.width = s.height = header
        s.pix_fmt = "yuvj420p"
        for i, side in enumerate(sides):
            buf = io.BytesIO()
            Image.new("L", (side, side), 128).save(buf, "JPEG", quality=1)
            p = av.Packet(buf.getvalue())
            p.stream, p.pts, p.dts, p.time_base = s, i, i, Fraction(1, 5)
            c.mux(p)


def _clip(path: Path, fmt: str, codec: str = "mpeg4", frames: int = 8, w: int = 64, h: int = 48) -> None:
    import av

    rng = np.random.default_rng(3)
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=5)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_video_frames_over_the_pixel_limit_are_refused_and_normal_videos_still_read(tmp_path: Path) -> None:
    rel = tmp_path / "release"
    names = _tiny_release(rel)
    _mjpeg(rel / "bomb.mp4", [8200] * 2, header=8200)  # MJPEG: the stream probe must decode a frame to size it
    _mjpeg(rel / "grows.mp4", [64] + [8200] * 7, header=64)  # the frame size changes after the first frame
    for fmt, ext in (("mp4", "mp4"), ("matroska", "mkv"), ("avi", "avi")):
        _clip(rel / f"ok.{ext}", fmt)
    assert [sniff_container((rel / f"ok.{e}").read_bytes()[:12]) for e in ("mp4", "mkv", "avi")] == \
        ["mov", "matroska", "avi"]
    assert (rel / "bomb.mp4").stat().st_size < 2_000_000

    r = _audit(rel, _originals(tmp_path), tmp_path / "report")
    assert r.returncode == 0, r.stderr
    text = _outputs(tmp_path / "report")
    skipped = _skipped_md(text["report.md"])
    assert list(skipped) == ["bomb.mp4", "grows.mp4"]
    for name in skipped:  # refused by FFmpeg's max_pixels before a frame was allocated, in the probe or mid-stream
        assert skipped[name] == ("video frames of 8200x8200 = 67240000 pixels exceed the limit of 64000000 "
                                 "(a decompression bomb?), refused by the decoder"), (name, skipped[name])
    released = {row["release"] for row in csv.DictReader(io.StringIO(text["flagged.csv"]))}
    assert released == set(names) | {f"ok.{e}#{i}" for e in ("mp4", "mkv", "avi") for i in range(8)}


def test_the_frame_size_in_the_header_is_checked_before_decoding(tmp_path: Path) -> None:
    import av

    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV's FFmpeg has no libx264 encoder")
    _clip(tmp_path / "small.mp4", "mp4", "libx264", frames=3)
    clip, desc = read_video(tmp_path / "small.mp4", 16, 3, max_pixels=64 * 48)
    assert len(clip) == 3 and clip[0].shape == (16, 16, 3) and desc == "64x48 video"
    with pytest.raises(Unreadable, match=r"^video frames of 64x48 = 3072 pixels exceed the limit of 3071 "
                                         r"\(a decompression bomb\?\)$"):  # from the header: no decoder ran
        read_video(tmp_path / "small.mp4", 16, 3, max_pixels=3071)


def test_hostile_file_names_do_not_forge_report_lines_html_or_spreadsheet_formulas(tmp_path: Path) -> None:
    rel = tmp_path / "release"
    names = _tiny_release(rel)
    good = (rel / names[0]).read_bytes()
    forged = "x\n| <script>alert(1) | 1.000 |\n# Verdict: safe\n.png"  # no "/": a name cannot hold one
    formula = '=HYPERLINK("x","click here").png'
    hostile = [forged, formula, "+1+2.png", "@SUM(A1).png", "-2+3.png", "[c](javascript:alert(1)).png",
               "a\\|b.png", "\x1b[2Jclear.png", "bad\udcffbyte.png"]
    for name in hostile:
        (rel / name).write_bytes(good)
    bad = "skip\n| <img src=x onerror=alert(1)> |\n- release: forged.png: fine\n.png"
    (rel / bad).write_text("not an image")  # skipped: its name is listed in report.md and report.html

    r = _audit(rel, _originals(tmp_path), tmp_path / "report")
    assert r.returncode == 0, r.stderr
    text = _outputs(tmp_path / "report")
    md = text["report.md"].splitlines()
    table = [line for line in md if line.startswith("|")]
    assert len(table) == 2 + 4  # header, rule, one row per risk: no forged row
    assert not [line for line in md if line.startswith("#") and not line.startswith(("# privbench", "## Skipped"))]
    section = text["report.md"].split("## Skipped files (1)\n\n", 1)[1].splitlines()
    assert len(section) == 1 and section[0].startswith(
        r"- release: skip \| &lt;img src=x onerror=alert(1)> \| - release: forged.png: fine .png: not a readable")
    for name in ("report.md", "report.html"):
        assert "<script" not in text[name] and "<img src=x" not in text[name], name
    assert "&lt;img src=x onerror=alert(1)&gt;" in text["report.html"]  # autoescaped, shown as text
    for name, body in text.items():
        assert "\x1b" not in body and "\r" not in body, name

    rows = list(csv.reader(io.StringIO(text["flagged.csv"])))
    cells = [row[0] for row in rows[1:]]
    assert len(cells) == 2 * (len(names) + len(hostile))  # faces and people rows, one per image, none forged
    assert cells.count("'" + formula) == 2 and cells.count("'+1+2.png") == 2 and cells.count("'@SUM(A1).png") == 2
    assert cells.count("'-2+3.png") == 2 and cells.count(forged) == 2
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert json.loads(text["summary.json"])["inputs"]["release"] == {"dir": str(rel), "images": 21, "skipped": 1}


def test_markdown_cell_keeps_escapes_links_and_lines_inert() -> None:
    assert markdown_cell("a\\|b") == r"a\\\|b"  # a backslash cannot un-escape the pipe after it
    assert markdown_cell("![t](https:/e.example/p.png)") == r"![t]\(https:/e.example/p.png)"  # no remote image
    assert markdown_cell("x\n|y\u2028z") == r"x \|y z"
    assert markdown_cell("<b>&amp;") == "&lt;b>&amp;amp;"  # no tag opens, no entity is decoded
    assert markdown_cell("a < b & c > d") == "a < b & c > d"  # text that cannot form either reads as it is
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("-0.25") == "-0.25" and csv_cell(3) == 3


def test_a_crash_while_writing_exits_3_with_a_message_and_leaves_no_report(tmp_path: Path, monkeypatch,
                                                                           capsys: pytest.CaptureFixture) -> None:
    from privbench.audit import report
    from privbench.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("renderer broke")

    rel = tmp_path / "release"
    _tiny_release(rel)
    monkeypatch.setattr(report, "to_html", broken)  # after summary.json and report.md are written
    code = main(["audit", str(rel), "--originals", str(_originals(tmp_path)), "--out", str(tmp_path / "report"),
                 "--no-progress", "--detect-max", "20"])
    assert code == 3  # never 0 or 1: a pipeline gating on the exit status does not pass a crashed audit
    assert "error: the audit crashed (RuntimeError: renderer broke); no report was written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orig", "release"]  # no report, no temporary directory
