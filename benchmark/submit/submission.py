"""``privbench submit``: admit a third-party defense, evaluate it in a sandbox, write its leaderboard entry.

Steps (docs/SUBMITTING.md):
    1. validate the card (:class:`Card`);
    2. import the submission in a sandbox child (:mod:`privbench.submit.child`) and check what it registers: every
       card id, no id that is already taken, frozen ``Params`` with plain defaults, declared surfaces;
    3. on a tiny batch, through the same proxies the run uses: shapes and value ranges of the release, the same
       release from the same seed in a fresh child, a transform that reproduces the release from the private
       images (so adaptive attacks query the real algorithm), and an adaptive attack of the suite that applies;
    4. run the ``submission`` suite with the card's defenses added, on the public seeds and, when the maintainers
       give them, on held-out seeds (records kept apart, seeds never written into the entry);
    5. check the card's claimed numbers against the measured CIs and write ``submission.json``.

Admission failures raise :class:`AdmissionError` (exit code 2) naming the defense and what to fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch
import yaml

from privbench.core.errors import InputError
from privbench.core.keys import KEY_ENV, load_or_create, subkey
from privbench.core.threats import ThreatModel
from privbench.core.yamlsafe import CARD_MAX_BYTES, SUITE_MAX_BYTES, load_file
from privbench.submit.leaderboard import SUBMISSION_SCHEMA
from privbench.submit.protocol import Limits, SandboxError
from privbench.submit.proxies import validate_description, write_proxy_module
from privbench.submit.session import Session
from privbench.submit.view import filesystem_isolation, readable_by_child

#: Environment variable naming the maintainers' held-out seed file (same as ``--heldout-seeds``).
HELDOUT_ENV = "PRIVBENCH_HELDOUT_SEEDS"


class AdmissionError(InputError):
    """The submission cannot be evaluated; the message names the defense and what to fix."""


# ---------------------------------------------------------------------------------------------------------------
# The card.


@dataclass(frozen=True)
class Claimed:
    """Numbers the authors claim for one configuration on the submission suite: top-1 ``utility`` and, per threat
    model, the calibrated ``leakage`` advantage."""

    utility: Optional[float] = None
    leakage: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CardDefense:
    id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    claimed: Claimed = field(default_factory=Claimed)


@dataclass(frozen=True)
class Card:
    """``card.yaml``: who, what, and which threat models the defense claims to protect against."""

    name: str
    authors: tuple[str, ...]
    url: str
    defenses: tuple[CardDefense, ...]
    threat_models: tuple[str, ...]

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "submission"


def _need(raw: Mapping[str, Any], key: str, tp: type | tuple[type, ...], where: str) -> Any:
    if key not in raw:
        raise AdmissionError(f"{where}: missing field {key!r}")
    value = raw[key]
    if not isinstance(value, tp) or isinstance(value, bool) and tp is not bool:
        want = tp.__name__ if isinstance(tp, type) else " or ".join(t.__name__ for t in tp)
        raise AdmissionError(f"{where}.{key}: expected {want}, got {type(value).__name__} {value!r}")
    return value


def _number(value: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= float(value) <= hi:
        raise AdmissionError(f"{where}: expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def load_card(path: Path) -> Card:
    """Parse (:mod:`privbench.core.yamlsafe`: plain data, at most 64 KiB) and validate ``card.yaml``; every problem
    names the file and field."""
    path = Path(path)
    if not path.is_file():
        raise AdmissionError(f"card {path}: no such file")
    where = f"card {path}"
    raw = load_file(path, max_bytes=CARD_MAX_BYTES, label=where, error=AdmissionError)
    if not isinstance(raw, Mapping):
        raise AdmissionError(f"{where}: expected a mapping at top level")
    unknown = sorted(set(raw) - {"name", "authors", "url", "defenses", "threat_models"})
    if unknown:
        raise AdmissionError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = _need(raw, "name", str, where).strip()
    if not name:
        raise AdmissionError(f"{where}.name: must not be empty")
    authors = _need(raw, "authors", list, where)
    if not authors or not all(isinstance(a, str) and a.strip() for a in authors):
        raise AdmissionError(f"{where}.authors: expected a non-empty list of names")
    url = _need(raw, "url", str, where)
    threats = _need(raw, "threat_models", list, where)
    known = {t.value for t in ThreatModel}
    for i, t in enumerate(threats):
        if t not in known:
            raise AdmissionError(f"{where}.threat_models[{i}]: {t!r} is not a threat model; known: "
                                 f"{', '.join(sorted(known))}")
    entries = _need(raw, "defenses", list, where)
    if not entries:
        raise AdmissionError(f"{where}.defenses: list at least one defense id to evaluate")
    defenses = []
    for i, e in enumerate(entries):
        w = f"{where}.defenses[{i}]"
        if isinstance(e, str):
            e = {"id": e}
        if not isinstance(e, Mapping):
            raise AdmissionError(f"{w}: expected an id or a mapping with an id")
        extra = sorted(set(e) - {"id", "params", "claimed"})
        if extra:
            raise AdmissionError(f"{w}: unknown field(s) {', '.join(extra)}")
        params = e.get("params") or {}
        if not isinstance(params, Mapping):
            raise AdmissionError(f"{w}.params: expected a mapping")
        c = e.get("claimed") or {}
        if not isinstance(c, Mapping) or set(c) - {"utility", "leakage"}:
            raise AdmissionError(f"{w}.claimed: expected a mapping with 'utility' and/or 'leakage'")
        leakage = c.get("leakage") or {}
        if not isinstance(leakage, Mapping):
            raise AdmissionError(f"{w}.claimed.leakage: expected a mapping threat model -> advantage")
        for t in leakage:
            if t not in known:
                raise AdmissionError(f"{w}.claimed.leakage: {t!r} is not a threat model")
        claimed = Claimed(None if c.get("utility") is None else _number(c["utility"], f"{w}.claimed.utility", 0, 1),
                          {t: _number(v, f"{w}.claimed.leakage.{t}", -1, 1) for t, v in sorted(leakage.items())})
        defenses.append(CardDefense(_need(e, "id", str, w), dict(params), claimed))
    return Card(name, tuple(authors), url, tuple(defenses), tuple(sorted(set(threats))))


# ---------------------------------------------------------------------------------------------------------------
# The submitted source.


def source_files(path: Path) -> list[Path]:
    """The submission's files: the ``.py`` file, or every file of the package directory (sorted, ``__pycache__``
    left out). A package holding a symbolic link or anything but regular files and directories is refused (its
    hash and snapshot would follow the link out of the package, or block on a FIFO)."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".py":
            raise AdmissionError(f"{path}: a submission is a Python file (.py) or a package directory")
        return [path]
    if path.is_dir():
        files = []
        for parent, dirs, names in os.walk(path):  # does not follow links to directories (they are refused here)
            for name in sorted(dirs + names):
                entry = Path(parent) / name
                if entry.is_symlink():
                    raise AdmissionError(f"{path}: {entry.relative_to(path)} is a symbolic link (to "
                                         f"{os.readlink(entry)!r}); a package submission holds regular files only")
                if name in names and not entry.is_file():
                    raise AdmissionError(f"{path}: {entry.relative_to(path)} is not a regular file; a package "
                                         "submission holds regular files only")
            if "__pycache__" not in Path(parent).relative_to(path).parts:
                files += [Path(parent) / n for n in names]
        if not (path / "__init__.py").is_file():
            raise AdmissionError(f"{path}: a package directory needs an __init__.py that registers the defenses")
        return sorted(files)
    raise AdmissionError(f"{path}: no such file or directory")


def source_hash(path: Path) -> str:
    """SHA-256 over the submission's files (relative names and contents)."""
    path = Path(path)
    base = path.parent if path.is_file() else path
    h = hashlib.sha256()
    for f in source_files(path):
        h.update(f.relative_to(base).as_posix().encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def read_heldout_seeds(path: Optional[Path]) -> tuple[int, ...]:
    """Held-out seeds: integers separated by commas, spaces or newlines (``#`` comments allowed)."""
    if path is None:
        return ()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"held-out seed file {path}: no such file")
    text = re.sub(r"#.*", "", path.read_text())
    tokens = [t for t in re.split(r"[\s,]+", text) if t]
    try:
        seeds = tuple(int(t) for t in tokens)
    except ValueError:
        raise InputError(f"held-out seed file {path}: expected integers, got {tokens[:5]}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise InputError(f"held-out seed file {path}: expected distinct non-negative seeds")
    return seeds


# ---------------------------------------------------------------------------------------------------------------
# Admission.


def snapshot(source: Path, dest: Path) -> Path:
    """Copy the submission to ``dest`` after :func:`source_files` has checked it (no symbolic link, regular files
    only; checked again on the copy when it is hashed): the run imports and hashes this copy, so what ran is what
    the entry's SHA-256 names."""
    source = Path(source)
    source_files(source)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    target = dest / source.name
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(source, target)
    return target


def describe(path: Path, card: Card, limits: Limits) -> tuple[dict[str, Any], bool]:
    """Import the submission in a sandbox child; check what it registers, here, against the card. Returns the
    validated description of its defenses and whether the child's writes and reads were confined."""
    try:
        session = Session(path, limits)
    except SandboxError as e:
        raise AdmissionError(f"submission {path.name}: {e}") from None
    try:
        hello = session.hello
    finally:
        session.close()
    try:
        registered, problems = validate_description(hello.get("defenses"))
    except SandboxError as e:
        raise AdmissionError(f"submission {path.name}: {e}") from None
    if not registered:
        raise AdmissionError(f"submission {path.name} registers no defense (decorate a Defense subclass with "
                             "@DEFENSES.register('your-id'))")
    for d in card.defenses:
        if d.id not in registered:
            problems.append(f"card defense {d.id!r} is not registered by {path.name} (it registers "
                            f"{', '.join(sorted(registered))})")
    for did, desc in sorted(registered.items()):
        declared = set(desc["claims"])
        if did in {d.id for d in card.defenses} and declared and declared != set(card.threat_models):
            problems.append(f"defense {did!r} declares claims {sorted(declared)} but the card says "
                            f"{list(card.threat_models)}; make them agree")
    if problems:
        raise AdmissionError("submission refused:\n  - " + "\n  - ".join(problems))
    for desc in registered.values():
        if not desc["claims"]:  # the card states the claims of a defense that declares none
            desc["claims"] = list(card.threat_models)
    return registered, hello.get("confined") is True and filesystem_isolation() is None


def _tiny_splits(suite: Any, n: int = 8) -> Any:
    from privbench.core.keys import run_key
    from privbench.data import load_splits

    splits = load_splits(suite.datasets[0], suite.splits, suite.seeds[0], suite.dataset_options.get(suite.datasets[0]),
                         run_key())  # keyed like the run's (admission runs under the public key)
    idx = torch.arange(min(n, len(splits.private)))
    return dataclasses.replace(splits, private=splits.private.subset(idx), aux=splits.aux.subset(idx),
                               test=splits.test.subset(idx), targets=torch.arange(len(idx)))


def card_specs(suite: Any, card: Card) -> list[Any]:
    """The suite's specs of the card's configurations (appended last, in card order, by :func:`submission_suite`)."""
    return list(suite.defenses[len(suite.defenses) - len(card.defenses):])


def tiny_batch_checks(suite: Any, card: Card) -> list[str]:
    """Run each card defense on 8 private images through its proxy (the code path of the run)."""
    from privbench.core.contracts import RunContext, Surface
    from privbench.core.registry import ATTACKS, DEFENSES

    splits = _tiny_splits(suite)
    checks = []
    for d, spec in zip(card.defenses, card_specs(suite, card)):
        cls = DEFENSES.get(d.id)
        ctx = RunContext(seed=suite.seeds[0], device=torch.device("cpu"), task=suite.task)
        first, second = cls(spec.params), cls(spec.params)
        try:
            a = first.build(splits, ctx)
            b = second.build(splits, ctx)  # a fresh child: no state carried between the two
            if a.surfaces != b.surfaces:
                raise AdmissionError(f"defense {d.id!r}: two builds with the same seed expose different surfaces")
            for name in ("data", "synthetic"):
                x, y = getattr(a, name), getattr(b, name)
                if x is not None and (y is None or not torch.equal(x.images, y.images)):
                    raise AdmissionError(f"defense {d.id!r}: the same seed gave a different {name} release "
                                         "(draw randomness only from ctx.generator(...) / the generator passed in)")
            if a.mask is not None and not torch.equal(a.mask, b.mask):
                raise AdmissionError(f"defense {d.id!r}: the same seed gave a different release mask")
            if Surface.TRANSFORM in cls.surfaces:  # the proxy's build already checked that it reproduces the release
                chosen = torch.rand(splits.private.images.shape, generator=torch.Generator().manual_seed(1))
                out = first.transform(chosen, torch.Generator().manual_seed(2))
                if out.shape[0] != chosen.shape[0]:
                    raise AdmissionError(f"defense {d.id!r}: transform of attacker-chosen images changed the batch")
            if Surface.MASK in cls.surfaces:
                first.mask_generator(splits.private.images, torch.Generator().manual_seed(3))
        except SandboxError as e:
            raise AdmissionError(f"defense {d.id!r} failed on a tiny batch: {e}") from None
        finally:
            first.close()
            second.close()
        adaptive = [a.id for a in suite.attacks if ATTACKS.get(a.id).adaptive
                    and ATTACKS.get(a.id)(a.params).compatible(frozenset(cls.surfaces)) is None]
        if not adaptive:
            raise AdmissionError(f"defense {d.id!r}: no adaptive attack of suite {suite.name!r} applies to its "
                                 f"surfaces ({', '.join(sorted(s.value for s in cls.surfaces))}); expose data or "
                                 "the transform, or propose an adaptive attack with the entry")
        checks.append(f"{spec.label} {json.dumps(spec.params_dict, sort_keys=True)}: release shapes and ranges on {len(splits.private)} images; same seed, same release "
                      f"(fresh child); " + ("transform reproduces the release; " if Surface.TRANSFORM in cls.surfaces
                                            else "") + f"adaptive attacks: {', '.join(adaptive)}")
    return checks


# ---------------------------------------------------------------------------------------------------------------
# The run and the entry.


@dataclass(frozen=True)
class SubmitOptions:
    source: Path
    card: Path
    out: Optional[Path] = None  # default: submissions/<card name>
    suite: str = "submission"
    heldout_seeds: Optional[Path] = None
    jobs: int = 1
    device: str = "cpu"
    limits: Limits = Limits()
    progress: bool = True
    plugins: tuple[str, ...] = ()  # --plugin files (attacks or datasets of a custom protocol)
    allow_unconfined: bool = False  # run without Landlock and seccomp (only inside a disposable VM or container)
    sandbox_key: Optional[Path] = None  # the run key (privbench.core.keys); default OUT/.sandbox-key, created once


def submission_suite(suite_source: str, card: Card, out: Path) -> Path:
    """The suite YAML of this entry: the standard protocol plus the card's defenses (written to ``out``)."""
    from privbench.run.config import SUITES_DIR, load_suite

    base = load_suite(suite_source)  # validates the protocol itself, and finds it by name
    path = Path(suite_source)
    if not path.suffix:
        path = SUITES_DIR / f"{suite_source}.yaml"
    raw = load_file(path, max_bytes=SUITE_MAX_BYTES)
    raw["defenses"] = list(raw["defenses"]) + [{"id": d.id, "params": dict(d.params)} for d in card.defenses]
    target = out / "suite.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"# {card.name}: suite {base.name!r} with the submitted defenses (written by privbench "
                      "submit)\n" + yaml.safe_dump(raw, sort_keys=False))
    return target


def check_claims(card: Card, full_params: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claimed number against the measured 95% CI of its configuration (public seeds).

    ``outside``: the claim lies outside the CI. ``optimistic``: outside on the side that flatters the defense
    (utility above the CI, leakage below it); those make the entry ``unreliable``. A claim with nothing measured
    to check it against (no attack of its threat model ran, no utility, no finished cell) has ``measured`` and
    ``outside`` ``None`` and a note saying "not measured"."""
    out = []
    for d, params in zip(card.defenses, full_params):  # noqa: B905 - one spec per card entry
        rows = [r for r in summary if r["defense"] == d.id and r["params"] == params]
        if not rows:  # every cell of the configuration failed
            claimed = ({"utility": d.claimed.utility} if d.claimed.utility is not None else {}) | \
                {f"leakage:{t}": v for t, v in d.claimed.leakage.items()}
            where = {"defense": d.id, "config": None, "dataset": None}
            out += [_unmeasured(q, v, where, "no cell of this configuration finished") for q, v in claimed.items()]
        for r in rows:
            if d.claimed.utility is not None:
                u = r["utility"]
                out.append(_unmeasured("utility", d.claimed.utility, r, "no utility was measured") if u is None
                           else _claim("utility", None, d.claimed.utility, u, r, optimistic=d.claimed.utility > _hi(u)))
            for t, v in d.claimed.leakage.items():
                cell = r["leakage"].get(t)
                interval = None if cell is None else cell["interval"]
                if interval is None:
                    out.append(_unmeasured(f"leakage:{t}", v, r, "no attack of this threat model ran"))
                    continue
                out.append(_claim(f"leakage:{t}", cell["status"], v, interval, r, optimistic=v < _lo(interval)))
    return out


def audit_self_reported(suite: Any, card: Card, out: Path, proxy: Path, summary: list[dict[str, Any]],
                        device: str) -> list[dict[str, Any]]:
    """The black-box one-run audit (``privbench.ops.dpaudit.one_run_blackbox``) of every configuration whose public
    records self-report an ε: one more sandboxed build on the first public seed, with test samples written over
    secret private slots as canaries (seeded by the secret run key), scored on what it releases. Claim rows for
    ``check_claims``' list; each makes the entry ``unreliable`` (``optimistic``) when the audited lower bound
    exceeds the claim, when δ exceeds 1/N (no meaningful DP claim), or when the audit cannot run (a stated ε the
    benchmark cannot check is not shown as one). The K audits share a 5% error rate (each at 1 − 0.05/K). Runs
    under the public run key."""
    import torch

    from privbench.core.contracts import RunContext
    from privbench.core.keys import keyed_seed, run_key
    from privbench.core.records import iter_records
    from privbench.core.registry import DEFENSES
    from privbench.core.textsafe import one_line
    from privbench.data import load_splits
    from privbench.ops.dpaudit import one_run_blackbox
    from privbench.run.plugins import load_plugins

    reported: dict[tuple[str, str, str], tuple[float, Optional[float], int]] = {}
    for _, r in sorted(iter_records(out / "public" / "records"), key=lambda pr: str(pr[0])):
        rel = r.get("metrics", {}).get("release", {}) if r["status"] == "ok" else {}
        if rel.get("self_reported_epsilon") is not None:
            key = (r["defense"]["id"], json.dumps(r["defense"]["params"], sort_keys=True), r["dataset"]["name"])
            seed = int(r["seed"])
            if key not in reported or seed < reported[key][2]:
                d = rel.get("self_reported_delta")
                reported[key] = (float(rel["self_reported_epsilon"]), None if d is None else float(d), seed)
    rows: list[dict[str, Any]] = []
    if not reported:
        return rows
    if any(k[0] not in DEFENSES for k in reported):
        load_plugins((str(proxy.resolve()),))
    specs = {(spec.id, json.dumps(json.loads(json.dumps(spec.params_dict)), sort_keys=True)): spec
             for spec in card_specs(suite, card)}
    key = run_key()
    assert key is not None, "audit_self_reported runs under the submission's run key"
    level = 1 - 0.05 / len(reported)
    for (did, params, dataset), (eps, delta, seed) in sorted(reported.items()):
        spec = specs.get((did, params))
        if spec is None:
            continue
        row = next((r for r in summary if r["defense"] == did and r["dataset"] == dataset
                    and json.dumps(r["params"], sort_keys=True) == params), None)
        where = {"defense": did, "config": None if row is None else row["config"], "dataset": dataset,
                 "quantity": "epsilon (self-reported)", "claimed": eps, "status": "ok"}
        splits = load_splits(dataset, suite.splits, seed, dict(suite.dataset_options.get(dataset, {})), key)
        n = len(splits.private)
        if delta is None or not 0 <= delta <= 1 / n or not eps >= 0:
            rows.append({**where, "measured": None, "outside": True,
                         "optimistic": True, "note": f"δ = {delta} is not at most 1/N = {1 / n:.2g}: not a "
                                                     "meaningful DP claim, so it is not shown as one"})
            continue
        defense = DEFENSES.get(did)(spec.params)
        ctx = RunContext(seed=seed, device=torch.device(device), task=suite.task)
        try:
            result = one_run_blackbox(lambda s: defense.build(s, ctx), splits, eps, delta,
                                      seed=keyed_seed(key, "dp-audit", did, params, dataset), confidence=level)
        except Exception as e:  # noqa: BLE001 - a refused or crashed audit build must not leave the claim standing
            rows.append({**where, "measured": None, "outside": True,
                         "optimistic": True, "note": "the DP audit could not run, so the claim is not shown as one "
                                                     f"({type(e).__name__}: {one_line(str(e))[:300]})"})
            continue
        lower = result.epsilon_lower
        if result.violated:
            note = "refuted by the black-box one-run DP audit"
        elif result.details["vacuous"]:
            note = (f"unverified: the claim ({result.claimed:.3f} for one sample replaced) is above the "
                    f"{result.details['ceiling']:.3f} this audit can ever show")
        else:
            note = (f"unverified: not refuted (audited lower bound {lower:.3f} for one sample replaced, against "
                    f"{result.claimed:.3f}); a black-box audit cannot verify a claim")
        rows.append({**where, "measured": {"mean": lower, "lo": lower, "hi": None},
                     "outside": result.violated, "optimistic": result.violated, "note": note,
                     "audit": result.as_dict()})
    return rows


def _unmeasured(quantity: str, claimed: float, row: Mapping[str, Any], why: str) -> dict[str, Any]:
    return {"defense": row["defense"], "config": row["config"], "dataset": row["dataset"], "quantity": quantity,
            "claimed": claimed, "measured": None, "status": None, "outside": None, "optimistic": False,
            "note": f"not measured ({why})"}


def _lo(interval: Mapping[str, Any]) -> float:
    return -float("inf") if interval["lo"] is None else float(interval["lo"])


def _hi(interval: Mapping[str, Any]) -> float:
    return float("inf") if interval["hi"] is None else float(interval["hi"])


def _claim(quantity: str, status: Optional[str], claimed: float, interval: Mapping[str, Any],
           row: Mapping[str, Any], optimistic: bool) -> dict[str, Any]:
    outside = not _lo(interval) <= claimed <= _hi(interval)
    return {"defense": row["defense"], "config": row["config"], "dataset": row["dataset"], "quantity": quantity,
            "claimed": claimed, "measured": dict(interval), "status": status, "outside": outside,
            "optimistic": bool(outside and optimistic),
            "note": "" if not outside else ("overclaims" if optimistic else "conservative")}


def _slim(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary without per-seed lists (for the held-out column: its seeds stay secret)."""
    return [{k: v for k, v in r.items() if k != "seeds"} | {"n_seeds": len(r["seeds"])} for r in summary]


@contextlib.contextmanager
def _key(key: bytes) -> Iterator[None]:
    """The run key (:mod:`privbench.core.keys`) for this process and the workers it spawns."""
    old = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = key.hex()
    try:
        yield
    finally:
        if old is None:
            del os.environ[KEY_ENV]
        else:
            os.environ[KEY_ENV] = old


def admit(opts: SubmitOptions, card: Card, out: Path,
          public_key: bytes) -> tuple[dict[str, Any], bool, Path, Any, list[str], str]:
    """Everything before the run: snapshot, description, proxy module, suite, tiny-batch checks. On refusal,
    whatever it wrote is removed. Returns ``(description, confined, proxy file, suite, checks, source sha256)``."""
    from privbench.run.config import load_suite
    from privbench.run.plugins import load_plugin_file

    reason = filesystem_isolation()
    if reason is not None and not opts.allow_unconfined:
        raise AdmissionError(f"cannot confine submitted code here: {reason}. Run where Landlock is available "
                             "(Linux >= 5.13), or pass --allow-unconfined inside a disposable VM or container")
    source_files(opts.source)  # a clear error for a missing or wrong source before anything is written
    created = [p for p in (out / "source", out / "proxy", out / "suite.yaml") if not p.exists()]
    try:
        source = snapshot(Path(opts.source), out / "source")
        digest = source_hash(source)
        description, confined = describe(source, card, opts.limits)
        proxy = write_proxy_module(out / "proxy" / f"{card.slug.replace('-', '_')}_proxy.py", source, digest,
                                   description, opts.limits)
        load_plugin_file(proxy)
        suite = load_suite(submission_suite(opts.suite, card, out))
        with _key(public_key):
            checks = tiny_batch_checks(suite, card)
    except BaseException:
        for p in created:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    return description, confined, proxy, suite, checks, digest


def submit(opts: SubmitOptions) -> tuple[dict[str, Any], int]:
    """Admit, evaluate and write ``OUT/submission.json``. Returns ``(entry, exit code)``: 0 when every cell ran, 1
    when some failed (their records say why). Admission problems raise :class:`AdmissionError`, and bad input
    :class:`InputError`, before any record is written."""
    from privbench import __version__
    from privbench.core.codehash import closure_hash, library_versions
    from privbench.core.provenance import git_commit, machine
    from privbench.core.records import atomic_write_text
    from privbench.report.frame import load_frame
    from privbench.report.tables import config_summaries
    from privbench.run.runner import RunOptions, resolve_device, run_suite

    if opts.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {opts.jobs}")
    opts = dataclasses.replace(opts, limits=dataclasses.replace(opts.limits, allow_unconfined=opts.allow_unconfined))
    resolve_device(opts.device)
    card = load_card(opts.card)
    out = Path(opts.out) if opts.out is not None else Path("submissions") / card.slug
    heldout_file = opts.heldout_seeds or (Path(os.environ[HELDOUT_ENV]) if os.environ.get(HELDOUT_ENV) else None)
    heldout = read_heldout_seeds(heldout_file)
    key_file = Path(opts.sandbox_key) if opts.sandbox_key is not None else out / ".sandbox-key"
    for what, p in (("--out", out), ("the sandbox key", key_file), ("the held-out seed file", heldout_file)):
        if p is not None and readable_by_child(p):
            raise InputError(f"{what} {p} lies where sandbox children may read (system directories, the "
                             "interpreter, the project's packages); choose a path outside them")
    run = load_or_create(key_file)  # a resumed run reuses it, so its splits and cells stay the same
    (out / "submission.json").unlink(missing_ok=True)  # a refused or failed re-run leaves no stale entry
    description, confined, proxy, suite, checks, digest = admit(opts, card, out, subkey(run, "public"))
    if set(heldout) & set(suite.seeds):
        raise InputError(f"held-out seeds overlap the public seeds {list(suite.seeds)}")
    common = dict(jobs=opts.jobs, device=opts.device, progress=opts.progress,
                  plugins=tuple(opts.plugins) + (str(proxy.resolve()),))
    with _key(subkey(run, "public")):
        public = run_suite(suite, RunOptions(out=out / "public", **common))
    summary = config_summaries(load_frame(out / "public"))
    entry_heldout = None
    failed = public.failed
    if heldout:
        assert heldout_file is not None
        with _key(subkey(run, "heldout", Path(heldout_file).read_bytes())):
            h = run_suite(dataclasses.replace(suite, seeds=heldout), RunOptions(out=out / "heldout", **common))
        failed += h.failed
        entry_heldout = {"n_seeds": len(heldout), "summary": _slim(config_summaries(load_frame(out / "heldout"))),
                         "failed_cells": h.failed}
    full = [json.loads(json.dumps(spec.params_dict)) for spec in card_specs(suite, card)]
    claims = check_claims(card, full, summary)
    with _key(subkey(run, "public")):
        claims += audit_self_reported(suite, card, out, proxy, summary, opts.device)
    entry = {
        "schema": SUBMISSION_SCHEMA,
        "card": {"name": card.name, "slug": card.slug, "authors": list(card.authors), "url": card.url,
                 "threat_models": list(card.threat_models),
                 "defenses": [{"id": d.id, "params": dict(d.params), "claimed": dataclasses.asdict(d.claimed)}
                              for d in card.defenses]},
        "source": {"name": Path(opts.source).name, "sha256": digest, "files": len(source_files(out / "source" /
                                                                                                Path(opts.source).name))},
        "defenses": description,
        "admission": {"checks": checks},
        "sandbox": {"limits": dataclasses.asdict(opts.limits), "confined": confined,
                    "note": "one fresh child per request, confined before it starts (namespaces, Landlock: reads of "
                            "system, interpreter, project packages and the submission but no dataset, writes in its "
                            "own directory; seccomp; no capabilities); splits, targets and seeds keyed by a secret "
                            "run key" if confined else f"NOT confined: {filesystem_isolation()}"},
        "suite": {"name": suite.name, "datasets": list(suite.datasets), "attacks": [a.label for a in suite.attacks],
                  "public_seeds": list(suite.seeds)},
        "public": {"summary": summary, "failed_cells": public.failed},
        "heldout": entry_heldout,
        "claims": claims,
        "unreliable": any(c["optimistic"] for c in claims),
        "provenance": {"privbench": __version__, "git_commit": git_commit(),
                       "sandbox_code": closure_hash("privbench.submit.proxies", "privbench.submit.child"), "libraries": library_versions(),
                       "machine": machine(opts.device)},
    }
    atomic_write_text(out / "submission.json", json.dumps(entry, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return entry, 1 if failed else 0
