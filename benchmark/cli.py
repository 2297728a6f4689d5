"""``privbench`` command line: list, run, report, show. Each subcommand is ``fn(args) -> int``.

Bad input (unknown ids, wrong parameter types, missing files, NaN data) prints one ``error:`` line naming the
file or field and exits with status 2, writing no partial record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from privbench.core.errors import InputError
from privbench.core.textsafe import printable


def _cmd_list(args: argparse.Namespace) -> int:
    from privbench.core.registry import ATTACKS, DATASETS, DEFENSES, METRICS, MODELS

    def _modalities(cls: type) -> str:
        """`` video`` / `` image+video`` for plugins that handle more than images (images are the default)."""
        mods = sorted(m.value for m in cls.modalities)
        return "" if mods == ["image"] else " " + "+".join(mods)

    print("datasets:")
    for name, fn in DATASETS.items():
        print(f"  {name:16s} {((fn.__doc__ or '').strip().splitlines() or [''])[0]}")
    print("defenses:")
    for name, cls in DEFENSES.items():
        surf = ",".join(sorted(s.value for s in cls.surfaces))
        strength = f" strength={cls.strength}" if cls.strength else ""
        print(f"  {name:16s} surfaces={surf}{strength}{_modalities(cls)}  {cls.describe()}")
    print("attacks:")
    for name, cls in ATTACKS.items():
        req = cls.requirements()
        print(f"  {name:16s} requires={req} access={cls.access.value}"
              f"{' adaptive' if cls.adaptive else ''}{_modalities(cls)}  {cls.describe()}")
    print("metrics: " + ", ".join(METRICS))
    print("models:  " + ", ".join(MODELS))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from privbench.run.config import load_suite
    from privbench.run.runner import run_suite
    from privbench.run.worker import RunOptions, resolve_device

    if args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    resolve_device(args.device)
    suite = load_suite(args.suite)
    if args.seeds:
        suite = dataclasses.replace(suite, seeds=tuple(args.seeds))
    if args.datasets:
        suite = dataclasses.replace(suite, datasets=tuple(args.datasets))
    opts = RunOptions(out=Path(args.out), jobs=args.jobs, device=args.device, retry_failed=args.retry_failed,
                      progress=not args.no_progress, use_lpips=not args.no_lpips,
                      plugins=tuple(str(Path(p).resolve()) for p in args.plugin),
                      dp_audit_trials=args.dp_audit_trials)
    executor = None
    if args.executor == "ray":
        from privbench.run.executors import RayExecutor

        executor = RayExecutor(opts.plugins, address=args.address, num_cpus=None if args.address else args.jobs)
    elif args.address:
        raise InputError("--address needs --executor ray")
    summary = run_suite(suite, opts, executor)
    print(f"{summary.planned} cells: {summary.reused} reused, {summary.ok} ok, {summary.skipped} skipped, "
          f"{summary.failed} failed -> {opts.out / 'records'}")
    for line in summary.failed_cells:
        print(f"failed: {line}")
    computed = summary.ok + summary.skipped + summary.failed
    if not args.no_report and (computed or not (opts.out / "tables").is_dir()):
        from privbench.report import write_report
        write_report(opts.out, parallel=True)
    return 1 if summary.failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from privbench.report import write_report

    if args.check:
        from privbench.run.check import board_problems

        problems = board_problems(Path(args.dir))
        for line in problems:
            print(line)
        if problems:
            print(f"{len(problems)} problem(s): re-run the suite at a clean commit to refresh these records",
                  file=sys.stderr)
            return 1
        print(f"{args.dir}: every record matches this checkout's code")
    written = write_report(Path(args.dir), force=args.force, parallel=True)
    for p in written:
        print(p)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from privbench.core.records import dumps, read_record

    print(dumps(read_record(Path(args.record))), end="")
    return 0


def _cmd_video_case(args: argparse.Namespace) -> int:
    from privbench.core.yamlsafe import load_text
    from privbench.run.video_case import CaseConfig, run_case

    params = load_text(args.params, "--params") if args.params else {}
    if not isinstance(params, dict):
        raise InputError("--params: expected a mapping, e.g. '{estimator: top-down}'")
    cfg = CaseConfig(args.defense, params, args.file, args.frames, args.step, args.start, args.width)
    summary = run_case(cfg, Path(args.out))
    print(f"{cfg.defense} on {cfg.file} ({cfg.frames} frames, {summary['seconds']:.1f} s):")
    for name, d in summary["detectors"].items():
        residual = "—" if d["residual"] is None else f"{d['residual']:.2f}"
        print(f"  {name:10s} before {d['before']:4d}  after: on unchanged pixels {d['after_unchanged']:4d}, "
              f"on rewritten pixels {d['after_changed']:4d}  residual {residual}")
    print(f"-> {Path(args.out) / 'video_case.json'}, {Path(args.out) / 'video_case.png'}")
    return 0


def _ci(d: Optional[dict]) -> str:
    """``0.512 [0.49, 0.53]`` from a summary interval (``None`` sides unbounded)."""
    if d is None:
        return "—"
    lo = "-inf" if d["lo"] is None else f"{d['lo']:.3f}"
    hi = "inf" if d["hi"] is None else f"{d['hi']:.3f}"
    return f"{d['mean']:.3f} [{lo}, {hi}]"


def _cmd_submit(args: argparse.Namespace) -> int:
    from privbench.submit.card import SubmitOptions
    from privbench.submit.protocol import Limits
    from privbench.submit.submission import submit

    limits = Limits(wall_seconds=args.wall_seconds, cpu_seconds=args.cpu_seconds,
                    memory_bytes=int(args.memory_gb * (1 << 30)), threads=args.sandbox_threads)
    opts = SubmitOptions(source=Path(args.path), card=Path(args.card), out=Path(args.out) if args.out else None,
                         suite=args.suite, heldout_seeds=Path(args.heldout_seeds) if args.heldout_seeds else None,
                         jobs=args.jobs, device=args.device, limits=limits, progress=not args.no_progress,
                         plugins=tuple(str(Path(p).resolve()) for p in args.plugin),
                         allow_unconfined=args.allow_unconfined,
                         sandbox_key=Path(args.sandbox_key) if args.sandbox_key else None)
    entry, code = submit(opts)
    out = Path(args.out) if args.out else Path("submissions") / entry["card"]["slug"]
    for check in entry["admission"]["checks"]:
        print(f"admitted: {check}")
    mine = {d["id"] for d in entry["card"]["defenses"]}
    for column, block in (("public", entry["public"]), ("held-out", entry["heldout"])):
        if block is None:
            continue
        for r in block["summary"]:
            if r["defense"] not in mine:
                continue
            u = r["utility"]
            leak = ", ".join(f"{t} {_ci(c['interval'])}" + ("" if c["status"] == "ok" else f" ({c['status']})")
                             for t, c in sorted(r["leakage"].items()) if c["interval"] is not None)
            print(f"{column:8s} {r['dataset']} {r['config']}: utility {_ci(u)}; leakage {leak or 'none measured'}")
    for c in entry["claims"]:
        if c["outside"]:
            print(f"claim outside its CI ({c['note']}): {c['config']} {c['quantity']} claimed {c['claimed']:.3g}, "
                  f"measured {_ci(c['measured'])}")
    print(("UNRELIABLE: the card overclaims; " if entry["unreliable"] else "") + f"-> {out / 'submission.json'}")
    return code


def _cmd_audit(args: argparse.Namespace) -> int:
    from privbench.audit import AuditConfig, parse_fail_on, run_audit
    from privbench.audit.report import write_report

    cfg = AuditConfig(release=Path(args.release), originals=Path(args.originals), out=Path(args.out),
                      aux=Path(args.aux) if args.aux else None, fail_on=parse_fail_on(args.fail_on),
                      size=args.size, false_flag_rate=args.false_flag_rate, detect_max=args.detect_max,
                      seed=args.seed, progress=not args.no_progress,
                      model=Path(args.model) if args.model else None, model_arch=args.model_arch,
                      model_width=args.model_width, model_size=args.model_size,
                      labels=Path(args.labels) if args.labels else None)
    try:
        result = run_audit(cfg)
        paths = write_report(result)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a crash must not read as "over threshold" (exit 1) to a pipeline
        import traceback

        traceback.print_exc()
        print(f"error: the audit crashed ({type(e).__name__}: {printable(str(e))}); no report was written",
              file=sys.stderr)
        return 3
    for r in result.risks:
        value = "not applicable" + (f" ({r.reason})" if r.reason else "") if r.value is None else \
            f"{r.value:.3f} [{r.lo:.3f}, {r.hi:.3f}]"
        print(f"{r.name:10s} {value}")
    skipped = sum(len(f.skipped) for f in (result.release, result.originals, result.aux) if f is not None)
    if skipped:
        print(f"{skipped} file(s) skipped (listed in the report)")
    failures = result.failures()
    for line in failures:
        print(f"over threshold: {line}")
    print(f"-> {paths[0].parent}")
    return 1 if failures else 0


def _cmd_dp_audit(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from privbench.core.atomic import atomic_write_text
    from privbench.core.registry import DEFENSES
    from privbench.data import load_splits
    from privbench.ops.dpaudit import AuditPlan, audit_defense
    from privbench.run.config import load_suite

    suite = load_suite(args.suite)
    plan = AuditPlan(trials=args.trials, canaries=args.canaries, guesses=(args.guesses, args.guesses),
                     confidence=args.confidence, seed=args.seed)
    specs = [s for s in suite.defenses if hasattr(DEFENSES.get(s.id), "training_step")
             and (args.defense is None or s.id == args.defense)]
    rows, jobs = [], []
    for dataset in suite.datasets:
        splits = None
        for spec in specs:
            defense = DEFENSES.get(spec.id)(spec.params)
            if not defense.claimed() or (spec.datasets is not None and dataset not in spec.datasets):
                continue
            if splits is None:
                splits = load_splits(dataset, suite.splits, suite.seeds[0], suite.dataset_options.get(dataset))
            jobs.append((dataset, spec, defense, splits))
    if not jobs:
        raise InputError(f"suite {suite.name!r} has no DP configuration (a defense with a noise claim) to audit")
    out = Path(args.out)
    failed = False
    for dataset, spec, defense, splits in jobs:
        knob = defense.strength_param()
        label = f"{dataset} {spec.id}" + (f" {knob}={getattr(spec.params, knob)}" if knob else "")
        dp = defense.plan(len(splits.private), splits.private.identities, suite.task)
        with tqdm(total=2 * plan.trials + dp.steps, unit="step", desc=label, disable=args.no_progress,
                  leave=False) as bar:
            result = audit_defense(defense, len(splits.private), tuple(splits.info.shape),
                                   splits.private.identities, suite.task, plan, progress=bar.update)
        rows.append({"dataset": dataset, "defense": spec.id, "params": spec.params_dict, **result})
        failed |= bool(result["violated"])
        s, r = result["step"], result["one_run"]
        print(f"{label}: step ε̂ {s['epsilon_lower']:.3f} (claim {s['claimed']:.3f}), run ε̂ "
              f"{r['epsilon_lower']:.3f} (claim {r['claimed']:.3f}) at {plan.confidence:.0%}"
              f"{'  VIOLATION' if result['violated'] else ''}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "dp_audit.json", json.dumps({"suite": suite.name, "audits": rows}, indent=1,
                                                        sort_keys=True) + "\n")
    print(f"-> {out / 'dp_audit.json'}")
    return 1 if failed else 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from privbench.submit.leaderboard import build

    for path in build(Path(args.submissions), Path(args.out)):
        print(path)
    return 0


def _plugin_option(p: argparse.ArgumentParser, dest: str) -> None:
    p.add_argument("--plugin", dest=dest, action="append", default=[], metavar="FILE",
                   help="Python file registering extra defenses/attacks (repeatable; before or after the subcommand)")


def _add_list(sub: Any) -> None:
    sp = sub.add_parser("list", help="list datasets, defenses (surfaces), attacks (requirements), metrics")
    sp.set_defaults(fn=_cmd_list)



def _add_run(sub: Any) -> None:
    sp = sub.add_parser("run", help="run a suite; resumes from existing records")
    sp.add_argument("--suite", required=True, help="built-in suite name (quick, ...) or YAML file")
    sp.add_argument("--out", required=True, help="output directory (records/, tables/, plots/, cache/)")
    sp.add_argument("--jobs", type=int, default=1, help="worker processes (torch threads are split among them); "
                                                         "with --executor ray and no --address: the local CPUs")
    sp.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="where jobs run: local processes, or Ray tasks (pip install -e '.[ray]')")
    sp.add_argument("--address", help="Ray cluster address, e.g. ray://head:10001 or auto (default: a local instance)")
    sp.add_argument("--seeds", type=int, nargs="+", help="override the suite's seeds")
    sp.add_argument("--datasets", nargs="+", help="override the suite's datasets")
    sp.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    sp.add_argument("--retry-failed", action="store_true", help="recompute cells whose record is 'failed'")
    sp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sp.add_argument("--no-report", action="store_true", help="do not regenerate tables/plots afterwards")
    sp.add_argument("--no-lpips", action="store_true", help="do not compute LPIPS even if weights are present")
    sp.add_argument("--dp-audit-trials", type=int, default=20_000,
                    help="steps per world of the step-level audit of every DP configuration's ε (default 20000)")
    sp.set_defaults(fn=_cmd_run)



def _add_report(sub: Any) -> None:
    sp = sub.add_parser("report", help="regenerate tables and plots from DIR/records")
    sp.add_argument("dir")
    sp.add_argument("--check", action="store_true",
                    help="first fail (exit 1), naming them, if records come from other code or a dirty tree")
    sp.add_argument("--force", action="store_true",
                    help="regenerate even if neither the records nor the report code changed since the last report")
    sp.set_defaults(fn=_cmd_report)



def _add_video_case(sub: Any) -> None:
    sp = sub.add_parser("video-case", help="anonymise a real video clip and count the people/faces detectors "
                                           "still find (default: OpenCV's vtest.avi)")
    sp.add_argument("--defense", default="avatar", help="a registered video defense (default: avatar)")
    sp.add_argument("--params", default="{estimator: top-down, retarget: proportions, background: inpaint, dilate: 2}",
                    help="the defense's params as YAML/JSON")
    sp.add_argument("--file", default="/usr/share/doc/opencv-doc/examples/data/vtest.avi", help="a local video")
    sp.add_argument("--frames", type=int, default=16)
    sp.add_argument("--step", type=int, default=3, help="keep every STEP-th frame")
    sp.add_argument("--start", type=int, default=0, help="first frame")
    sp.add_argument("--width", type=int, default=384, help="frame width in pixels (aspect kept)")
    sp.add_argument("--out", required=True, help="directory for video_case.json and video_case.png")
    sp.set_defaults(fn=_cmd_video_case)



def _add_submit(sub: Any) -> None:
    sp = sub.add_parser("submit", help="admit a third-party defense, evaluate it in a sandbox and write its "
                                       "leaderboard entry (docs/SUBMITTING.md)")
    sp.add_argument("path", help="the submission: a Python file or a package directory registering defenses")
    sp.add_argument("--card", required=True, help="card.yaml: name, authors, url, defenses, threat models, claims")
    sp.add_argument("--suite", default="submission", help="the protocol (default: the submission suite)")
    sp.add_argument("--out", help="output directory (default: submissions/<card name>)")
    sp.add_argument("--heldout-seeds", help="maintainers: file of held-out seeds (or set PRIVBENCH_HELDOUT_SEEDS)")
    sp.add_argument("--jobs", type=int, default=1)
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--wall-seconds", type=float, default=900.0, help="sandbox: wall time per request")
    sp.add_argument("--cpu-seconds", type=int, default=3600, help="sandbox: CPU seconds per child")
    sp.add_argument("--memory-gb", type=float, default=8.0, help="sandbox: address-space limit per child (torch alone maps ~3.7 GiB)")
    sp.add_argument("--sandbox-threads", type=int, default=1, help="sandbox: torch threads per child")
    sp.add_argument("--allow-unconfined", action="store_true",
                    help="run even where Landlock and seccomp cannot confine the submission (only in a disposable "
                         "VM/container)")
    sp.add_argument("--sandbox-key", help="maintainers: the run key that keys splits, targets and the seeds children "
                                          "see (default OUT/.sandbox-key, created on the first run; keep it secret "
                                          "and outside what children read)")
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(fn=_cmd_submit)



def _add_leaderboard(sub: Any) -> None:
    sp = sub.add_parser("leaderboard", help="render the submissions leaderboard from submission.json files")
    lsub = sp.add_subparsers(dest="action", required=True)
    lb = lsub.add_parser("build", help="render Markdown/CSV/HTML from every submission.json under SUBMISSIONS")
    lb.add_argument("submissions", nargs="?", default="submissions")
    lb.add_argument("--out", default="leaderboards/submissions")
    lb.set_defaults(fn=_cmd_leaderboard)



def _add_audit(sub: Any) -> None:
    sp = sub.add_parser("audit", help="audit an image/video dataset release against its originals before publishing "
                                      "it (docs/AUDIT.md); exit 1 if a --fail-on threshold is exceeded, 2 on bad input")
    sp.add_argument("release", help="directory of the release (images and/or videos, recursively)")
    sp.add_argument("--originals", required=True, help="directory of the private originals")
    sp.add_argument("--aux", help="directory of fresh images from the same population (the baseline; default: "
                                  "the originals, leave-one-out)")
    sp.add_argument("--out", required=True, help="report directory (report.html, report.md, flagged.csv, "
                                                 "summary.json)")
    sp.add_argument("--fail-on", action="append", default=[], metavar="RISK=THRESHOLD",
                    help="exit 1 if RISK's calibrated value exceeds THRESHOLD (repeatable), e.g. near-copy=0.02")
    sp.add_argument("--false-flag-rate", type=float, default=0.01, help="near-copy flags at this rate on fresh images")
    sp.add_argument("--size", type=int, default=64, help="images are normalised to SIZE x SIZE")
    sp.add_argument("--detect-max", type=int, default=500, help="face/people detectors look at most at this many "
                                                                "images per set (a seeded sample)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and detector samples")
    sp.add_argument("--model", help="a released model's state dict (loaded with weights_only=True): adds the "
                                    "membership risk (needs --aux and --labels)")
    sp.add_argument("--model-arch", default="convnet", help="its registered architecture (privbench list: models)")
    sp.add_argument("--model-width", type=int, help="its width parameter, if not the architecture's default")
    sp.add_argument("--model-size", type=int, default=32, help="its input size in pixels")
    sp.add_argument("--labels", help="CSV file,label for the originals and aux images (relative names)")
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(fn=_cmd_audit)



def _add_dp_audit(sub: Any) -> None:
    sp = sub.add_parser("dp-audit", help="audit every DP configuration of a suite empirically (step-level canaries and "
                                         "the one-run audit, docs/METHODS.md); exit 1 if a lower bound exceeds "
                                         "its claimed ε")
    sp.add_argument("--suite", required=True, help="suite name or YAML path")
    sp.add_argument("--defense", help="only this defense id")
    sp.add_argument("--out", required=True, help="directory for dp_audit.json")
    sp.add_argument("--trials", type=int, default=20_000, help="steps per world of the step-level audit")
    sp.add_argument("--canaries", type=int, default=1000, help="canaries of the one-run audit")
    sp.add_argument("--guesses", type=int, default=100, help="one-run guesses in and out (each), fixed in advance")
    sp.add_argument("--confidence", type=float, default=0.95)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(fn=_cmd_dp_audit)



def _add_show(sub: Any) -> None:
    sp = sub.add_parser("show", help="validate and print one record")
    sp.add_argument("record")
    sp.set_defaults(fn=_cmd_show)


#: The subcommands, in ``privbench --help`` order: each adds its parser and options to the subparsers.
_SUBCOMMANDS = (_add_list, _add_run, _add_report, _add_video_case, _add_submit,
                _add_leaderboard, _add_audit, _add_dp_audit, _add_show)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="privbench", description=__doc__.splitlines()[0])
    _plugin_option(p, "plugin")
    sub = p.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    for name, sp in sub.choices.items():
        _plugin_option(sp, "plugin_after")  # also accepted after the subcommand
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.plugin = list(args.plugin) + list(getattr(args, "plugin_after", []))
    try:
        from privbench.run.plugins import load_plugins

        if args.fn in (_cmd_list, _cmd_run, _cmd_video_case, _cmd_submit, _cmd_dp_audit) or getattr(args, "check", False):  # report/show: records only, fast
            load_plugins(tuple(args.plugin))
        return int(args.fn(args))
    except InputError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)  # names from a release or a card: no terminal escapes
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `privbench report DIR | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
