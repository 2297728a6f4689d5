"""The audit's outputs: ``report.html`` (self-contained: thumbnails as data URIs), ``report.md``, ``flagged.csv``
and ``summary.json``, written into a temporary directory next to the target and renamed into place, so a crash
leaves no half-written report."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np

from privbench.audit import AuditResult, config_dict
from privbench.audit.output import MARKER
from privbench.audit.risks import CANNOT_TEST
from privbench.core.textsafe import csv_cell, markdown_cell, printable


def _uri(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _f(x: Optional[float]) -> str:
    if x is None:
        return "—"
    return "inf" if math.isinf(x) and x > 0 else "-inf" if math.isinf(x) else f"{x:.3f}"


def _json_safe(x: Any) -> Any:
    """Non-finite floats (an unbounded CI side, a threshold that never flags) become ``None``."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _skipped(result: AuditResult) -> list[dict[str, str]]:
    """Skipped files of every input (file names and reasons without control characters)."""
    return [{"set": k, "path": printable(x.path), "reason": printable(x.reason)}
            for k, f in (("release", result.release), ("originals", result.originals), ("aux", result.aux))
            if f is not None for x in f.skipped]


def summary(result: AuditResult) -> dict[str, Any]:
    from privbench import __version__

    thresholds = dict(result.config.fail_on)
    return _json_safe({
        "schema": 1,
        "privbench": __version__,
        "config": config_dict(result.config),
        "inputs": {k: {"dir": str(f.root), "images": len(f), "skipped": len(f.skipped)}
                   for k, f in (("release", result.release), ("originals", result.originals), ("aux", result.aux))
                   if f is not None},
        "risks": {r.name: {**r.summary(), "fail_on": thresholds.get(r.name)} for r in result.risks},
        "failures": result.failures(),
        "untested": [f"{r.name}: {r.reason}" for r in result.risks if r.reason.startswith(CANNOT_TEST)],
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
    })


def _markdown(result: AuditResult, s: dict[str, Any]) -> str:
    """``report.md``. Every piece of text that is not ours (directory and file names, skip reasons, which quote
    them) goes through :func:`markdown_cell`: no name can start a line, a table cell or raw HTML."""
    md = markdown_cell
    lines = ["# privbench audit\n", f"Release {md(result.release.root)} ({len(result.release)} images) against "
             f"originals {md(result.originals.root)} ({len(result.originals)} images)"
             + (f" and aux {md(result.aux.root)} ({len(result.aux)})" if result.aux is not None else "") + ".\n",
             ("**Over threshold:** " + md("; ".join(s["failures"])) if s["failures"] else
              "**Not tested:** " + md("; ".join(s["untested"])) if s["untested"] else
              "Every risk is under its --fail-on threshold." if result.config.fail_on else
              "No --fail-on thresholds were given.") + "\n",
             "| risk | value (95% CI) | estimate | baseline | n | threshold | meaning |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in result.risks:
        cal = (r.detail.get("status") or "not applicable") if r.value is None else \
            f"{_f(r.value)} [{_f(r.lo)}, {_f(r.hi)}]" + (f" ({r.detail['status']})" if "status" in r.detail else "")
        meaning = r.meaning + (f" ({r.reason})" if r.reason else "")
        lines.append(f"| {md(r.name)} | {cal} | {_f(r.estimate)} | {_f(r.baseline)} | {r.n} | "
                     f"{_f(s['risks'][r.name]['fail_on'])} | {md(meaning)} |")
    skipped = _skipped(result)
    lines.append(f"\n## Skipped files ({len(skipped)})\n")
    lines += [f"- {x['set']}: {md(x['path'])}: {md(x['reason'])}" for x in skipped] or ["None: every file was read."]
    return "\n".join(lines) + "\n"


def to_html(result: AuditResult, s: dict[str, Any]) -> str:
    import jinja2

    from privbench import __version__

    env = jinja2.Environment(loader=jinja2.PackageLoader("privbench.audit", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    thresholds = dict(result.config.fail_on)
    risks = []
    for r in result.risks:
        thumbs = [{"release": printable(result.release.names[i]), "release_uri": _uri(result.release.images[i]),
                   "original": printable(result.originals.names[j]) if j >= 0 else "",
                   "original_uri": _uri(result.originals.images[j]) if j >= 0 else "", "score": f"{score:.2f}"}
                  for i, j, score in r.pairs[:12]]
        limit = thresholds.get(r.name)
        risks.append({"name": r.name, "value": None if r.value is None else _f(r.value), "lo": _f(r.lo),
                      "status": r.detail.get("status", ""),
                      "hi": _f(r.hi), "estimate": _f(r.estimate), "baseline": _f(r.baseline), "n": r.n,
                      "threshold": _f(limit), "meaning": r.meaning, "reason": r.reason, "thumbs": thumbs,
                      "over": limit is not None and r.value is not None and r.value > limit})
    skipped = _skipped(result)
    return env.get_template("report.html.j2").render(
        release=str(result.release.root), originals=str(result.originals.root),
        aux=str(result.aux.root) if result.aux is not None else "", n_release=len(result.release),
        n_originals=len(result.originals), n_aux=len(result.aux) if result.aux is not None else 0,
        when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), version=__version__,
        failures=s["failures"], untested=s["untested"], fail_on=bool(result.config.fail_on), risks=risks,
        skipped=skipped)


def write_report(result: AuditResult) -> list[Path]:
    """Write the four outputs into ``result.config.out`` (replacing an earlier audit report there, never anything
    else; :func:`check_out` ran before the audit). Text is UTF-8; file names that are not are written escaped.
    File names lose their control characters everywhere (:func:`printable`); in ``flagged.csv`` they go through
    :func:`csv_cell` (no spreadsheet formula), in ``report.html`` through jinja2's autoescape."""
    out = Path(result.config.out)
    s = summary(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    text = {"encoding": "utf-8", "errors": "backslashreplace"}
    old = out.with_name(f".{out.name}.old")
    try:
        (tmp / "summary.json").write_text(json.dumps(s, indent=1, sort_keys=True, allow_nan=False) + "\n", **text)
        (tmp / "report.md").write_text(_markdown(result, s), **text)
        (tmp / "report.html").write_text(to_html(result, s), **text)
        (tmp / MARKER).write_text("privbench audit report\n")
        with open(tmp / "flagged.csv", "w", newline="", **text) as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["release", "original", "risk", "score", "threshold", "flagged"])
            for r in result.risks:
                for row in r.rows:
                    w.writerow([csv_cell(printable(row.release)), csv_cell(printable(row.original)), row.risk,
                                f"{row.score:.6g}", f"{row.threshold:.6g}", int(row.flagged)])
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)  # put the earlier report back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / n for n in ("report.html", "report.md", "flagged.csv", "summary.json")]
