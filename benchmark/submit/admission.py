"""Admission of a submission (docs/SUBMITTING.md, steps 2–3): everything before the run, in seconds.

The source is snapshotted and hashed, imported in a sandbox child (:mod:`privbench.submit.child`) whose
description is validated (every card id, no id already taken, frozen ``Params`` with plain defaults, declared
surfaces), a trusted proxy module is written, and on a tiny batch, through the same proxies the run uses: shapes
and value ranges of the release, the same release from the same seed in a fresh child, a transform that
reproduces the release from the private images (so adaptive attacks query the real algorithm), and an adaptive
attack of the suite that applies. Failures raise :class:`~privbench.submit.card.AdmissionError` naming the defense
and what to fix; whatever admission wrote is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml

from privbench.core.keys import KEY_ENV
from privbench.core.yamlsafe import SUITE_MAX_BYTES, load_file
from privbench.submit.card import AdmissionError, Card, SubmitOptions
from privbench.submit.protocol import Limits, SandboxError
from privbench.submit.proxies import validate_description, write_proxy_module
from privbench.submit.session import Session
from privbench.submit.view import filesystem_isolation

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
    from privbench.core.contracts import RunContext
    from privbench.core.images import Surface
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




@contextlib.contextmanager
def run_key_env(key: bytes) -> Iterator[None]:
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
        with run_key_env(public_key):
            checks = tiny_batch_checks(suite, card)
    except BaseException:
        for p in created:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    return description, confined, proxy, suite, checks, digest
