"""Proxy defenses (trusted side): the trusted processes of a run never import a submission. They register proxies
(:func:`proxy_classes`) whose ``build`` / ``transform`` / ``mask_generator`` / ``public_info`` forward to a fresh
:class:`privbench.submit.session.Session` per request, and validate everything a child reports again
(:func:`validate_description`, the release checks in :class:`SandboxedDefense`). Seeds and generator states a child
sees are keyed by the run key (:mod:`privbench.core.keys`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import keyword
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from privbench.core import keys
from privbench.core.atomic import atomic_write_text
from privbench.core.contracts import Defense, RunContext
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Modality, Splits, Surface
from privbench.core.keys import run_key
from privbench.core.registry import valid_id
from privbench.core.release import Release, ReleaseMeta
from privbench.core.threats import ThreatModel
from privbench.submit.protocol import SANDBOX_SURFACES, SCALAR_TYPES, Limits, SandboxError
from privbench.submit.session import Session, printable

# ---------------------------------------------------------------------------------------------------------------
# Proxy defenses (trusted side).

_TYPES = ("bool", "int", "float", "str") + tuple(f"Optional[{t}]" for t in ("bool", "int", "float", "str")) + \
    tuple(f"tuple[{t}, ...]" for t in ("bool", "int", "float", "str"))
#: The key of a proxy used outside ``privbench submit`` (admission tests, a maintainer's own run): public, so such
#: runs are not protected from a seed-aware submission; ``submit`` always sets a secret run key
#: (:mod:`privbench.core.keys`).
UNKEYED = hashlib.sha256(b"privbench public seeds").digest()


def _valid_default(value: Any, tname: str) -> bool:
    if tname.startswith("Optional["):
        return value is None or _valid_default(value, tname[9:-1])
    if tname.startswith("tuple["):
        return isinstance(value, list) and all(_valid_default(v, tname[6:].split(",")[0]) for v in value)
    if tname == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is SCALAR_TYPES[tname]


def validate_description(defenses: Any) -> tuple[dict[str, Any], list[str]]:
    """Check a child's description of its defenses here, on the trusted side (the child could forge it):
    returns ``(cleaned description, problems)``; a malformed description raises :class:`SandboxError`."""
    try:
        return _validate_description(defenses)
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # a forged shape the checks below did not foresee
        raise SandboxError(f"malformed description ({type(e).__name__}: {printable(str(e))[:200]})") from None


def _validate_description(defenses: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(defenses, dict):
        raise SandboxError("malformed description: not a mapping of defense ids")
    clean: dict[str, Any] = {}
    problems: list[str] = []
    surface_names, threat_names = {s.value for s in Surface}, {t.value for t in ThreatModel}
    for did, d in sorted(defenses.items()):
        if not valid_id(did):
            raise SandboxError(f"malformed description: defense id {did!r}")
        if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in
                                              ("surfaces", "claims", "modalities", "params")) \
                or not isinstance(d.get("problems", []), list) \
                or not all(isinstance(x, str) for k in ("surfaces", "claims", "modalities") for x in d[k]):
            raise SandboxError(f"malformed description of {did!r}")
        problems += [f"defense {did!r}: {printable(str(p))[:300]}" for p in d.get("problems", [])]
        surfaces = sorted(x for x in d["surfaces"] if x in surface_names)
        if len(surfaces) != len(d["surfaces"]) or not surfaces:
            problems.append(f"defense {did!r}: declare its surfaces (class attribute `surfaces`)")
        outside = sorted(x for x in surfaces if Surface(x) not in SANDBOX_SURFACES)
        if outside:
            problems.append(f"defense {did!r}: surfaces {', '.join(outside)} cannot leave the sandbox (allowed: "
                            f"{', '.join(sorted(x.value for x in SANDBOX_SURFACES))})")
        claims = sorted(t for t in d["claims"] if t in threat_names)
        if len(claims) != len(d["claims"]):
            problems.append(f"defense {did!r}: claims must be threat models ({', '.join(sorted(threat_names))})")
        modalities = sorted(m for m in d["modalities"] if m in {m.value for m in Modality}) or [Modality.IMAGE.value]
        params = []
        for p in d["params"]:
            name, tname = (p.get("name"), p.get("type")) if isinstance(p, dict) else (None, None)
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
                    or name.startswith("_") or tname not in _TYPES:
                raise SandboxError(f"malformed description of {did!r}: params field {printable(repr(p))[:200]}")
            if not _valid_default(p.get("default"), tname):
                problems.append(f"defense {did!r}: Params.{name} default {printable(repr(p.get('default')))[:100]} "
                                f"is not a {tname}")
                continue
            params.append({"name": name, "type": tname, "default": p["default"]})
        strength = d.get("strength")
        if strength is not None and not any(p["name"] == strength and p["type"] in ("int", "float") for p in params):
            problems.append(f"defense {did!r}: strength = {printable(repr(strength))[:100]} must name a numeric "
                            "Params field")
            strength = None
        doc = d.get("doc") if isinstance(d.get("doc"), str) else ""
        clean[did] = {"doc": printable(doc)[:300], "surfaces": surfaces, "claims": claims, "strength": strength,
                      "modalities": modalities, "params": params}
    return clean, problems


def _field_type(name: str) -> Any:
    if name.startswith("Optional["):
        return Optional[_field_type(name[9:-1])]
    if name.startswith("tuple["):
        return tuple[SCALAR_TYPES[name[6:].split(",")[0]], ...]
    return SCALAR_TYPES[name]


def _tensors_of(prefix: str, s: ImageSet) -> dict[str, Tensor]:
    out = {f"{prefix}images": s.images, f"{prefix}labels": s.labels}
    for k in ("identities", "masks", "keypoints"):
        if getattr(s, k) is not None:
            out[f"{prefix}{k}"] = getattr(s, k)
    return out


def _nbytes(tensors: Mapping[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _key() -> bytes:
    return run_key() or UNKEYED


def keyed_seed(seed: int) -> int:
    """The seed a sandbox child sees for cell seed ``seed``, keyed by the run key (:mod:`privbench.core.keys`): a child
    cannot recompute the splits from it, nor tell a public seed from a held-out one."""
    return keys.keyed_seed(_key(), "seed", seed)


def _child_state(generator: torch.Generator) -> Tensor:
    """The state a child's generator starts from for a call with ``generator``: keyed from its state, which then
    advances by one draw (successive calls get fresh randomness, as in-process)."""
    state = generator.get_state().numpy().tobytes().hex()
    torch.randint(0, 2, (1,), generator=generator)
    return torch.Generator().manual_seed(keys.keyed_seed(_key(), "generator", state)).get_state()


def _integer(t: Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


#: The tensors a build reply may hold, with the dtypes each may have.
_TENSOR_KINDS = {"data_images": lambda t: t.is_floating_point(), "synthetic_images": lambda t: t.is_floating_point(),
                 "data_labels": _integer, "synthetic_labels": _integer,
                 "mask": lambda t: t.dtype == torch.bool or t.dtype == torch.uint8}


def _meta(reply: Any, did: str) -> ReleaseMeta:
    """Release metadata from a child, type-checked. A submission's ε, δ and accountant are its own statements: they
    go to ``extra`` as ``self_reported_*``, never into the fields the tables read as guarantees."""
    if not isinstance(reply, dict) or set(reply) - {"epsilon", "delta", "accountant", "bits_per_image",
                                                     "defense_seconds", "extra"}:
        raise SandboxError(f"{did}: malformed release meta")
    number = (int, float)
    extra: dict[str, Any] = {}
    raw = reply.get("extra") if isinstance(reply.get("extra"), dict) else {}
    for k, v in raw.items():
        if isinstance(k, str) and (isinstance(v, (*number, str)) and not isinstance(v, bool)):
            extra[printable(k)[:64]] = printable(v)[:200] if isinstance(v, str) else v
    for k in ("epsilon", "delta"):
        if isinstance(reply.get(k), number) and not isinstance(reply.get(k), bool):
            extra[f"self_reported_{k}"] = float(reply[k])
    if isinstance(reply.get("accountant"), str):
        extra["self_reported_accountant"] = printable(reply["accountant"])[:100]
    bpi = reply.get("bits_per_image")
    return ReleaseMeta(bits_per_image=float(bpi) if isinstance(bpi, number) and not isinstance(bpi, bool) else None,
                       extra=extra)


class SandboxedDefense(Defense):
    """Base of the proxies: every call that runs the defense's code goes to a sandbox child.

    Every request (``build``, ``transform``, ``mask_generator``, ``public_info``) runs in a fresh child that
    answers it and is closed: no child carries anything from one request to the next, so only the build's child
    ever sees the private split, and the reproduction check below, an attack's query, a public run and a held-out
    run all look alike from inside (one request of the same form, seeds and generator states keyed by the run's
    secret key: :func:`keyed_seed`, :mod:`privbench.core.keys`). A transform defense's release is checked on every
    build: ``transform(private)`` under the build's release generator, in another fresh child, must reproduce it,
    so the algorithm attacks query is the one that made the release."""

    source: Path
    limits: Limits
    description: Mapping[str, Any]

    def _ask(self, op: str, header: Optional[Mapping[str, Any]], tensors: Mapping[str, Tensor],
             max_reply: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """One request in a fresh child, closed when it answers."""
        try:
            session = Session(self.source, self.limits, label=self.source.name)
            try:
                return session.request(op, {"id": self.id, "params": dataclasses.asdict(self.params),
                                            **(header or {})}, tensors, max_reply)
            finally:
                session.close()
        except SandboxError as e:
            raise SandboxError(f"defense {self.id!r}: {e}") from None

    def close(self) -> None:
        """Nothing to close: no child outlives its request."""

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        info = splits.info
        seed = keyed_seed(ctx.seed)
        header = {"seed": seed, "device": str(ctx.device), "task": dataclasses.asdict(ctx.task),
                  "info": {"name": info.name, "num_classes": info.num_classes, "shape": list(info.shape),
                           "sizes": {k: int(v) for k, v in info.sizes.items()}, "hash": "", "split_hashes": {}}}
        tensors = {**_tensors_of("private_", splits.private), **_tensors_of("aux_", splits.aux)}
        reply, t = self._ask("build", header, tensors, 4 * _nbytes(tensors) + (64 << 20))
        release = self._release(reply, t, splits)
        if Surface.TRANSFORM in self.surfaces:
            if release.data is None:
                raise SandboxError(f"defense {self.id!r}: a transform defense must release data")
            state = RunContext(seed=seed, device=ctx.device, task=ctx.task).generator("release").get_state()
            again = self._transform(splits.private.images, state)
            if again.shape != release.data.images.shape or not torch.allclose(again, release.data.images, atol=1e-5):
                raise SandboxError(
                    f"defense {self.id!r}: transform(private, ctx.generator('release')) does not reproduce the "
                    "released data, so attacks querying the public algorithm would not query what was released "
                    "(subclass privbench.defenses.base.InputDefense, or release exactly that)")
        return release

    def _release(self, reply: Mapping[str, Any], t: Mapping[str, Tensor], splits: Splits) -> Release:
        """The child's build reply as a :class:`Release`, every field checked; anything malformed (a forged
        frame included) raises :class:`SandboxError`, never another exception."""
        did = f"defense {self.id!r}"
        for key, tensor in t.items():
            kind = _TENSOR_KINDS.get(key)
            if kind is None or not kind(tensor) or tensor.ndim == 0:
                raise SandboxError(f"{did}: release field {key!r} of dtype {tensor.dtype} and shape "
                                   f"{tuple(tensor.shape)} is not allowed")
        try:
            return self._parse_release(reply, t, splits, did)
        except (IndexError, TypeError, ValueError, RuntimeError, NotImplementedError) as e:
            raise SandboxError(f"{did}: malformed release ({type(e).__name__}: {printable(str(e))[:200]})") from None

    def _parse_release(self, reply: Mapping[str, Any], t: Mapping[str, Tensor], splits: Splits,
                       did: str) -> Release:
        data = None
        if "data_images" in t:
            if t["data_images"].shape[0] != len(splits.private) or "data_labels" not in t:
                raise SandboxError(f"{did}: released {t['data_images'].shape[0]} samples for {len(splits.private)} "
                                   "private ones (the data surface is aligned to them, with their labels)")
            if not torch.equal(t["data_labels"].long(), splits.private.labels):
                raise SandboxError(f"{did}: the data release must keep the private samples' labels")
            try:
                data = ImageSet(t["data_images"].float(), t["data_labels"].long())
            except InputError as e:
                raise SandboxError(f"{did}: released data: {e}") from None
        synthetic = None
        if "synthetic_images" in t:
            labels = t.get("synthetic_labels")
            n = splits.info.num_classes
            if labels is None or labels.ndim != 1 or (len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n)):
                raise SandboxError(f"{did}: synthetic labels must be class ids in [0, {n})")
            try:
                synthetic = ImageSet(t["synthetic_images"].float(), labels.long())
            except InputError as e:
                raise SandboxError(f"{did}: released synthetic set: {e}") from None
        mask = t.get("mask")
        if mask is not None:
            want = None if data is None else (len(data), 1, *data.images.shape[-2:])
            if want is None or tuple(mask.shape) != want:
                raise SandboxError(f"{did}: release mask of shape {tuple(mask.shape)}, expected {want} (aligned to "
                                   "the released data)")
            mask = mask.to(torch.bool)
        declared = set(self.surfaces) - {Surface.TRANSFORM}
        for s, value in ((Surface.DATA, data), (Surface.SYNTHETIC, synthetic), (Surface.MASK, mask)):
            if (value is not None) != (s in declared):
                raise SandboxError(f"{did}: declares surfaces {sorted(x.value for x in self.surfaces)} but the "
                                   f"release {'has' if value is not None else 'lacks'} {s.value}")
        public = self.transform if Surface.TRANSFORM in self.surfaces else None
        masks = self.mask_generator if Surface.MASK in self.surfaces else None
        return Release(data=data, transform=public, inference_transform=public, mask=mask, mask_generator=masks,
                       synthetic=synthetic, meta=_meta(reply.get("meta"), did))

    def release_state(self, release: Release) -> dict[str, Any]:
        state = super().release_state(release)
        if release.synthetic is not None:
            state["synthetic_images"], state["synthetic_labels"] = release.synthetic.images, release.synthetic.labels
        return state

    def restore(self, state: Mapping[str, Any], splits: Splits, ctx: RunContext) -> Release:
        release = super().restore(state, splits, ctx)
        if "synthetic_images" in state:
            release.synthetic = ImageSet(state["synthetic_images"], state["synthetic_labels"])
        return release

    def _transform(self, images: Tensor | ImageSet, state: Tensor) -> Tensor:
        x = images if isinstance(images, ImageSet) else None
        tensors = _tensors_of("", x) if x is not None else {"images": images}
        shape = tuple((x.images if x is not None else images).shape)
        reply = self._ask("transform", None, {**tensors, "generator_state": state},
                              4 * _nbytes(tensors) + (16 << 20))[1]
        out = reply.get("images")
        if out is None or out.ndim != len(shape) or out.shape[0] != shape[0] or not out.is_floating_point():
            raise SandboxError(f"defense {self.id!r}: transform of {shape} returned "
                               f"{None if out is None else (tuple(out.shape), out.dtype)}")
        try:
            ImageSet(out.float(), torch.zeros(len(out), dtype=torch.long))
        except InputError as e:
            raise SandboxError(f"defense {self.id!r}: transform output: {e}") from None
        return out.float()

    def transform(self, images: Tensor | ImageSet, generator: torch.Generator) -> Tensor:
        if Surface.TRANSFORM not in self.surfaces:
            return super().transform(images, generator)  # type: ignore[arg-type]
        return self._transform(images, _child_state(generator))

    def mask_generator(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if Surface.MASK not in self.surfaces:
            return super().mask_generator(images, generator)
        tensors = {"images": images, "generator_state": _child_state(generator)}
        mask = self._ask("mask", None, tensors, _nbytes(tensors) + (16 << 20))[1].get("mask")
        want = (len(images), 1, *images.shape[-2:])
        if mask is None or tuple(mask.shape) != want:
            raise SandboxError(f"defense {self.id!r}: mask generator returned "
                               f"{None if mask is None else tuple(mask.shape)}, expected {want}")
        return mask.to(torch.bool)

    def public_info(self, shape: tuple[int, int, int]) -> dict[str, Any]:
        info = self._ask("public_info", {"shape": list(shape)}, {}, 1 << 20)[0].get("info")
        if not isinstance(info, dict):
            raise SandboxError(f"defense {self.id!r}: public_info must be a mapping")
        return info


def proxy_classes(module: str, source: str | Path, description: Mapping[str, Any],
                  limits: Limits = Limits()) -> dict[str, type[Defense]]:
    """Proxy defense classes for a submission, keyed by Python name (to be set as attributes of ``module``, so
    their params pickle by reference), and registered under the submission's ids.

    ``description``: the defenses of the child's start-up reply, checked by :func:`validate_description`.
    """
    from privbench.core.registry import DEFENSES

    clean, problems = validate_description(dict(description))
    if problems:
        raise SandboxError("; ".join(problems))
    out: dict[str, type[Defense]] = {}
    for did, desc in clean.items():
        name = "Defense_" + did.replace("-", "_")
        fields = [(p["name"], _field_type(p["type"]),
                   dataclasses.field(default=tuple(p["default"]) if isinstance(p["default"], list) else p["default"]))
                  for p in desc["params"]]
        params_cls = dataclasses.make_dataclass("Params", fields, frozen=True)
        params_cls.__module__, params_cls.__qualname__ = module, f"{name}.Params"
        cls = type(name, (SandboxedDefense,), {
            "__module__": module, "__qualname__": name, "__doc__": desc["doc"] or f"Submitted defense {did}.",
            "Params": params_cls, "source": Path(source), "limits": limits, "description": desc,
            "surfaces": frozenset(Surface(s) for s in desc["surfaces"]),
            "claims": frozenset(ThreatModel(t) for t in desc["claims"]),
            "strength": desc["strength"],
            "modalities": frozenset(Modality(m) for m in desc["modalities"])})
        DEFENSES.register(did)(cls)
        out[name] = cls
    return out


PROXY_TEMPLATE = '''"""Generated by `privbench submit`: proxies of a submitted defense. Trusted: it imports nothing of the
submission, whose code runs only in sandbox children (privbench.submit.child)."""
import json

from privbench.submit.protocol import Limits
from privbench.submit.proxies import proxy_classes

SOURCE = {source}
SOURCE_SHA256 = {digest}
DESCRIPTION = json.loads({description})
LIMITS = Limits(**json.loads({limits}))
globals().update(proxy_classes(__name__, SOURCE, DESCRIPTION, LIMITS))
'''


def write_proxy_module(path: Path, source: Path, digest: str, description: Mapping[str, Any], limits: Limits) -> Path:
    """Write the trusted proxy module that every process of a run loads as a ``--plugin`` file. Every value is a
    ``repr`` of a string: nothing from the submission becomes source code."""
    text = PROXY_TEMPLATE.format(source=repr(str(source.resolve())), digest=repr(str(digest)),
                                 description=repr(json.dumps(description, sort_keys=True)),
                                 limits=repr(json.dumps(dataclasses.asdict(limits), sort_keys=True)))
    atomic_write_text(path, text)
    return path
