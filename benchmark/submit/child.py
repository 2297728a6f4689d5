"""The sandbox child (docs/SUBMITTING.md): it imports the submission and nothing else of the run, describes what it
registered, and answers ``build`` / ``transform`` / ``mask`` / ``public_info`` requests over the wire protocol
(:mod:`privbench.submit.protocol`). Started only by :class:`privbench.submit.session.Session`, already confined.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import traceback
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor

from privbench.core.contracts import Defense, RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import DatasetInfo, ImageSet, Splits
from privbench.core.paths import package_dir
from privbench.core.release import Release
from privbench.submit.protocol import SANDBOX_SURFACES, SCALAR_TYPES, encode, read_frame, write_frame


def _import_source(path: Path) -> None:
    """Import a submission: a ``.py`` file or a package directory (its ``__init__.py`` registers the defenses).
    Its exceptions propagate as they are."""
    import importlib.util

    if path.is_file():
        init, search = path, None
    elif (path / "__init__.py").is_file():
        init, search = path / "__init__.py", [str(path)]
    else:
        raise InputError(f"{path}: expected a Python file or a package directory with __init__.py")
    name = f"privbench_submission_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=search)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: cannot import it")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _type_name(tp: Any) -> Optional[str]:
    """``float`` / ``Optional[int]`` / ``tuple[str, ...]`` for supported Params field types, else ``None``."""
    for name, t in SCALAR_TYPES.items():
        if tp is t:
            return name
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and len(args) == 2 and type(None) in args:
        inner = _type_name(next(a for a in args if a is not type(None)))
        return None if inner is None or "[" in inner else f"Optional[{inner}]"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in SCALAR_TYPES.values():
        return f"tuple[{_type_name(args[0])}, ...]"
    return None


def _describe(cls: type) -> dict[str, Any]:
    """What the trusted side needs to register a proxy of ``cls``, plus the problems the child can see (the trusted
    side checks the description again: :func:`validate_description`)."""
    problems = []
    params: list[dict[str, Any]] = []
    P = getattr(cls, "Params", None)
    if P is None or not dataclasses.is_dataclass(P):
        problems.append("Params must be a dataclass")
    else:
        if not P.__dataclass_params__.frozen:
            problems.append("Params must be a frozen dataclass (@dataclass(frozen=True))")
        hints = typing.get_type_hints(P)
        for f in dataclasses.fields(P):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"Params.{f.name} has no default")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            tname = _type_name(hints.get(f.name))
            if tname is None:
                problems.append(f"Params.{f.name}: type {hints.get(f.name)!r} is not supported (use bool, int, "
                                "float, str, Optional[...] of one, or tuple[..., ...])")
                continue
            params.append({"name": f.name, "type": tname,
                           "default": list(default) if isinstance(default, tuple) else default})
    surfaces = getattr(cls, "surfaces", None) or frozenset()
    return {"doc": cls.describe(), "surfaces": sorted(getattr(x, "value", str(x)) for x in surfaces),
            "claims": sorted(getattr(t, "value", str(t)) for t in getattr(cls, "claims", frozenset())),
            "strength": getattr(cls, "strength", None),
            "modalities": sorted(getattr(m, "value", str(m)) for m in getattr(cls, "modalities", frozenset())),
            "params": params, "problems": problems}


def _imageset(tensors: Mapping[str, Tensor], prefix: str) -> ImageSet:
    return ImageSet(tensors[f"{prefix}images"], tensors[f"{prefix}labels"],
                    *(tensors.get(f"{prefix}{k}") for k in ("identities", "masks", "keypoints")))


def _release_reply(release: Any) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if not isinstance(release, Release):
        raise TypeError(f"build returned {type(release).__name__}, expected privbench.api.Release")
    bad = sorted(s.value for s in release.surfaces - SANDBOX_SURFACES)
    if bad:
        raise TypeError(f"the release exposes {', '.join(bad)}, which cannot leave the sandbox")
    meta = dataclasses.asdict(release.meta)
    meta["extra"] = dict(release.meta.extra)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"release.meta must hold plain numbers and strings ({e})") from None
    tensors: dict[str, Tensor] = {}
    if release.data is not None:
        tensors["data_images"], tensors["data_labels"] = release.data.images, release.data.labels
    if release.mask is not None:
        tensors["mask"] = release.mask
    if release.synthetic is not None:
        tensors["synthetic_images"], tensors["synthetic_labels"] = release.synthetic.images, release.synthetic.labels
    for k, v in tensors.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"release field {k} must be a torch.Tensor, got {type(v).__name__}")
    return {"ok": True, "meta": meta}, {k: v.detach().to(torch.bool if k == "mask" else v.dtype)
                                        for k, v in tensors.items()}


def _generator(tensors: Mapping[str, Tensor]) -> torch.Generator:
    g = torch.Generator()
    g.set_state(tensors["generator_state"])
    return g


def _reseed_globals(header: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> None:
    """Global RNGs (torch, numpy, random) reseeded from the request itself, so a defense that (wrongly) draws from
    them gives the same answer whatever was asked before in this child."""
    import random

    import numpy as np

    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    if "generator_state" in tensors:
        h.update(tensors["generator_state"].numpy().tobytes())
    seed = int.from_bytes(h.digest()[:4], "little")
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _error_reply(e: BaseException) -> dict[str, Any]:
    """A failed request's reply: the exception and the submission's own frame it came from (not the project's)."""
    tb = traceback.extract_tb(e.__traceback__)
    where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                  if not f.filename.startswith(str(package_dir()))), "")
    return {"ok": False, "error": f"{type(e).__name__}: {str(e)[:2000]}" + (f" (at {where})" if where else "")}


Reply = tuple[dict[str, Any], Optional[Mapping[str, Tensor]]]


def _op_build(d: Defense, header: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Reply:
    info = header["info"]
    splits = Splits(private=_imageset(tensors, "private_"), aux=_imageset(tensors, "aux_"),
                    test=_imageset(tensors, "aux_").subset(torch.arange(0)), targets=torch.zeros(0, dtype=torch.long),
                    info=DatasetInfo(info["name"], info["num_classes"], tuple(info["shape"]), info["sizes"],
                                     info["hash"], info["split_hashes"]))
    ctx = RunContext(seed=int(header["seed"]), device=torch.device(header["device"]), task=TaskConfig(**header["task"]))
    return _release_reply(d.build(splits, ctx))


def _op_transform(d: Defense, header: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Reply:
    x = _imageset(tensors, "") if "labels" in tensors else tensors["images"]
    g = _generator(tensors)
    return {"ok": True}, {"images": d.transform(x, g), "generator_state": g.get_state()}


def _op_mask(d: Defense, header: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Reply:
    g = _generator(tensors)
    return {"ok": True}, {"mask": d.mask_generator(tensors["images"], g).to(torch.bool),
                          "generator_state": g.get_state()}


def _op_public_info(d: Defense, header: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Reply:
    info = d.public_info(tuple(header["shape"]))
    json.dumps(info, allow_nan=False)
    return {"ok": True, "info": info}, None


#: The requests a sandbox child answers (``header["op"]``), each on the defense instance the header names.
OPERATIONS: dict[str, Callable[[Defense, Mapping[str, Any], Mapping[str, Tensor]], Reply]] = {
    "build": _op_build, "transform": _op_transform, "mask": _op_mask, "public_info": _op_public_info}


def child_main(read_fd: int, write_fd: int, source: str, limits_json: str) -> None:
    """The sandbox child: import the built-ins and then the submission, describe what it registered, then answer
    requests (:data:`OPERATIONS`) until the pipe closes.

    Runs as ``python -I -c`` in the child's directory, exec'd by :mod:`privbench.submit.confine` after every limit and
    restriction was applied to the single-threaded bootstrap: nothing here, submitted or not, runs unconfined."""
    from privbench.core.registry import DEFENSES
    from privbench.run.startup import start_process

    limits = json.loads(limits_json)
    sys.dont_write_bytecode = True
    start_process(int(limits["threads"]), None)
    builtin = set(DEFENSES)

    def send(header: Mapping[str, Any], tensors: Optional[Mapping[str, Tensor]] = None) -> None:
        write_frame(write_fd, encode(header, tensors))

    confined = json.loads(os.environ.get("PRIVBENCH_CONFINED", "{}"))
    try:
        _import_source(Path(source))
    except BaseException as e:  # noqa: BLE001 - report any import failure as data
        if isinstance(e, KeyError) and e.args and str(e.args[0]).startswith("duplicate defense id"):
            send({"ok": False, "fatal": True, "error": f"registers an id that is already taken: {e.args[0]}"})
        else:
            send({**_error_reply(e), "fatal": True, "error": f"import failed: {_error_reply(e)['error']}"})
        return
    new = sorted(set(DEFENSES) - builtin)
    send({"ok": True, "defenses": {i: _describe(DEFENSES.get(i)) for i in new},
          "confined": bool(confined.get("landlock")) and confined.get("seccomp") is True})
    instances: dict[str, Defense] = {}
    while True:
        try:
            header, tensors = read_frame(read_fd, None, 1 << 40)
        except EOFError:
            return
        try:
            _reseed_globals(header, tensors)
            key = json.dumps([header["id"], header["params"]], sort_keys=True)
            if key not in instances:
                cls = DEFENSES.get(header["id"])
                instances[key] = cls(cls.Params(**{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in header["params"].items()}))
            op = OPERATIONS.get(header["op"])
            if op is None:
                send({"ok": False, "error": f"unknown operation {header['op']!r}"})
            else:
                send(*op(instances[key], header, tensors))
        except BaseException as e:  # noqa: BLE001 - the submission's exception is data for the trusted side
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            send(_error_reply(e))
