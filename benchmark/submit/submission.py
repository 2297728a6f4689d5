"""``privbench submit``: admit a third-party defense, evaluate it in a sandbox, write its leaderboard entry.

Steps (docs/SUBMITTING.md):
    1. validate the card (:func:`privbench.submit.card.load_card`);
    2. (:mod:`privbench.submit.admission`) import the submission in a sandbox child and check what it registers: every
       card id, no id that is already taken, frozen ``Params`` with plain defaults, declared surfaces;
    3. on a tiny batch, through the same proxies the run uses: shapes and value ranges of the release, the same
       release from the same seed in a fresh child, a transform that reproduces the release from the private
       images (so adaptive attacks query the real algorithm), and an adaptive attack of the suite that applies;
    4. run the ``submission`` suite with the card's defenses added, on the public seeds and, when the maintainers
       give them, on held-out seeds (records kept apart, seeds never written into the entry);
    5. check the card's claimed numbers against the measured CIs (:mod:`privbench.submit.claimcheck`) and write
       ``submission.json``.

Admission failures raise :class:`~privbench.submit.card.AdmissionError` (exit code 2) naming the defense and what to fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

from privbench.core.errors import InputError
from privbench.core.keys import load_or_create, subkey
from privbench.submit.admission import admit, card_specs, run_key_env, source_files
from privbench.submit.card import HELDOUT_ENV, SubmitOptions, load_card, read_heldout_seeds
from privbench.submit.claimcheck import audit_self_reported, check_claims
from privbench.submit.leaderboard import SUBMISSION_SCHEMA
from privbench.submit.view import filesystem_isolation, readable_by_child


def _slim(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary without per-seed lists (for the held-out column: its seeds stay secret)."""
    return [{k: v for k, v in r.items() if k != "seeds"} | {"n_seeds": len(r["seeds"])} for r in summary]


def _paths(opts: SubmitOptions, card: Any) -> tuple[Path, Optional[Path], tuple[int, ...], Path]:
    """``(out, held-out seed file, held-out seeds, sandbox key file)``, each refused where a child could read it."""
    out = Path(opts.out) if opts.out is not None else Path("submissions") / card.slug
    heldout_file = opts.heldout_seeds or (Path(os.environ[HELDOUT_ENV]) if os.environ.get(HELDOUT_ENV) else None)
    heldout = read_heldout_seeds(heldout_file)
    key_file = Path(opts.sandbox_key) if opts.sandbox_key is not None else out / ".sandbox-key"
    for what, p in (("--out", out), ("the sandbox key", key_file), ("the held-out seed file", heldout_file)):
        if p is not None and readable_by_child(p):
            raise InputError(f"{what} {p} lies where sandbox children may read (system directories, the "
                             "interpreter, the project's packages); choose a path outside them")
    return out, heldout_file, heldout, key_file


def submit(opts: SubmitOptions) -> tuple[dict[str, Any], int]:
    """Admit, evaluate and write ``OUT/submission.json``. Returns ``(entry, exit code)``: 0 when every cell ran, 1
    when some failed (their records say why). Admission problems raise
    :class:`~privbench.submit.card.AdmissionError`, and bad input :class:`InputError`, before any record is
    written."""
    from privbench.core.atomic import atomic_write_text
    from privbench.report.frame import load_frame
    from privbench.report.summary import config_summaries
    from privbench.run.runner import run_suite
    from privbench.run.worker import RunOptions, resolve_device

    if opts.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {opts.jobs}")
    opts = dataclasses.replace(opts, limits=dataclasses.replace(opts.limits, allow_unconfined=opts.allow_unconfined))
    resolve_device(opts.device)
    card = load_card(opts.card)
    out, heldout_file, heldout, key_file = _paths(opts, card)
    run = load_or_create(key_file)  # a resumed run reuses it, so its splits and cells stay the same
    (out / "submission.json").unlink(missing_ok=True)  # a refused or failed re-run leaves no stale entry
    description, confined, proxy, suite, checks, digest = admit(opts, card, out, subkey(run, "public"))
    if set(heldout) & set(suite.seeds):
        raise InputError(f"held-out seeds overlap the public seeds {list(suite.seeds)}")
    common = dict(jobs=opts.jobs, device=opts.device, progress=opts.progress,
                  plugins=tuple(opts.plugins) + (str(proxy.resolve()),))
    with run_key_env(subkey(run, "public")):
        public = run_suite(suite, RunOptions(out=out / "public", **common))
    summary = config_summaries(load_frame(out / "public"))
    entry_heldout = None
    failed = public.failed
    if heldout:
        assert heldout_file is not None
        with run_key_env(subkey(run, "heldout", Path(heldout_file).read_bytes())):
            h = run_suite(dataclasses.replace(suite, seeds=heldout), RunOptions(out=out / "heldout", **common))
        failed += h.failed
        entry_heldout = {"n_seeds": len(heldout), "summary": _slim(config_summaries(load_frame(out / "heldout"))),
                         "failed_cells": h.failed}
    full = [json.loads(json.dumps(spec.params_dict)) for spec in card_specs(suite, card)]
    claims = check_claims(card, full, summary)
    with run_key_env(subkey(run, "public")):
        claims += audit_self_reported(suite, card, out, proxy, summary, opts.device)
    entry = _entry(opts, card, out, suite, digest, description, checks, confined, claims,
                   {"summary": summary, "failed_cells": public.failed}, entry_heldout)
    atomic_write_text(out / "submission.json", json.dumps(entry, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return entry, 1 if failed else 0


def _entry(opts: SubmitOptions, card: Any, out: Path, suite: Any, digest: str, description: dict[str, Any],
           checks: list[str], confined: bool, claims: list[dict[str, Any]], public: dict[str, Any],
           heldout: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The ``submission.json`` entry (schema :data:`~privbench.submit.leaderboard.SUBMISSION_SCHEMA`)."""
    from privbench import __version__
    from privbench.core.codehash import closure_hash, library_versions
    from privbench.core.provenance import git_commit, machine

    files = source_files(out / "source" / Path(opts.source).name)
    return {
        "schema": SUBMISSION_SCHEMA,
        "card": {"name": card.name, "slug": card.slug, "authors": list(card.authors), "url": card.url,
                 "threat_models": list(card.threat_models),
                 "defenses": [{"id": d.id, "params": dict(d.params), "claimed": dataclasses.asdict(d.claimed)}
                              for d in card.defenses]},
        "source": {"name": Path(opts.source).name, "sha256": digest, "files": len(files)},
        "defenses": description,
        "admission": {"checks": checks},
        "sandbox": {"limits": dataclasses.asdict(opts.limits), "confined": confined,
                    "note": "one fresh child per request, confined before it starts (namespaces, Landlock: reads of "
                            "system, interpreter, project packages and the submission but no dataset, writes in its "
                            "own directory; seccomp; no capabilities); splits, targets and seeds keyed by a secret "
                            "run key" if confined else f"NOT confined: {filesystem_isolation()}"},
        "suite": {"name": suite.name, "datasets": list(suite.datasets), "attacks": [a.label for a in suite.attacks],
                  "public_seeds": list(suite.seeds)},
        "public": public,
        "heldout": heldout,
        "claims": claims,
        "unreliable": any(c["optimistic"] for c in claims),
        "provenance": {"privbench": __version__, "git_commit": git_commit(),
                       "sandbox_code": closure_hash("privbench.submit.proxies", "privbench.submit.child"),
                       "libraries": library_versions(), "machine": machine(opts.device)},
    }
