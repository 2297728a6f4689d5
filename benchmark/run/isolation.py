"""Isolation of attack code (docs/DESIGN.md, Isolation).

Every attack cell runs in a fresh child process forked from a clean server process that has imported the code but
never held private data (``multiprocessing`` ``forkserver``; ``spawn`` where that does not exist). The child gets a
pickled copy of its :class:`~privbench.core.contracts.AttackView` (plain data: tensors, modules of the release, public
parameters) and talks to the defender over a pipe for everything that needs secrets:

- ``transform`` queries: the defender applies its public algorithm with fresh secret randomness;
- ``gradients`` queries: the defender computes the shared update of a batch of its training set;
- ``run_training``: the attacker's training code runs in a *second* child (the platform), which alone receives
  the training set, and only the state dict it returns comes back;
- ``memo``: attack artifacts (e.g. shadow models) cached by the runner under the attack's code hash.

Whatever the child sends is decoded with ``torch.load(weights_only=True)``: the runner never unpickles an object
made by attack code. An attack that mutates its view changes only its own copy.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor

from privbench.core.contracts import AttackOutput, ReleaseView
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Surface
from privbench.core.release import GradientOracle, Release, ReleaseMeta
from privbench.core.seeding import derive_seed
from privbench.run.attack_child import (
    OUTPUT_FIELDS,
    AttackError,
    AttackJob,
    GradientProxy,
    PipelineProxy,
    TransformProxy,
    attack_child_main,
    loads,
    platform_child_main,
    process_context,
)

# ----------------------------------------------------------------------------------------------------------------
# Runner side.


@dataclass
class DefenderServices:
    """The defender's side of the query surfaces of one cell.

    ``secret`` seeds the transform's fresh randomness (derived from the defense's secret stream and the attack's
    label, so cells are independent of their order); ``memo_get`` / ``memo_put`` reach the attack-artifact cache.
    """

    release: Release
    secret: int
    plugins: tuple[str, ...] = ()
    threads: int = 1
    memo_get: Optional[Callable[[str], Optional[dict]]] = None
    memo_put: Optional[Callable[[str, dict], None]] = None
    #: The state dict training code must return (the suite's task model): anything else is refused, so training
    #: code cannot smuggle its training set out as "weights".
    expected_state: Optional[Callable[[], Mapping[str, Tensor]]] = None
    #: The defense's training pipeline on attacker-chosen data (``train, call number -> state dict``).
    pipeline: Optional[Callable[[ImageSet, int], Mapping[str, Tensor]]] = None

    def __post_init__(self) -> None:
        self._g = torch.Generator().manual_seed(self.secret)
        self._pipeline_calls = 0

    def handle(self, op: str, msg: Mapping[str, Any]) -> dict[str, Any]:
        rel = self.release
        if op == "transform" and rel.transform is not None:
            return {"images": rel.transform(_annotated(msg), self._g)}
        if op == "transform_mask" and rel.transform is not None and rel.mask_generator is not None:
            x = _images(msg)
            state = self._g.get_state()
            released = rel.transform(x, self._g)
            again = torch.Generator().set_state(state)  # the mask of the same secret draw
            return {"images": released, "mask": rel.mask_generator(x, again)}
        if op == "gradients" and rel.gradients is not None:
            return {"grads": list(rel.gradients(msg["idx"]))}
        if op == "train" and rel.gradients is not None:
            state = run_platform(msg["code"], rel.gradients, self.plugins, self.threads)
            check_state_dict(state, self.expected_state() if self.expected_state else None)
            return {"state": state}
        if op == "pipeline" and self.pipeline is not None:
            labels = msg.get("labels")
            if not isinstance(labels, Tensor) or labels.ndim != 1:
                raise InputError("pipeline: labels must be a 1-D tensor")
            self._pipeline_calls += 1
            given = _annotated(msg)
            train = (ImageSet(_images(msg), labels) if isinstance(given, Tensor)
                     else ImageSet(given.images, labels, None, given.masks, given.keypoints))
            return {"state": dict(self.pipeline(train, self._pipeline_calls))}
        if op == "memo_get":
            value = self.memo_get(str(msg["key"])) if self.memo_get else None
            return {"hit": value is not None, "value": value}
        if op == "memo_put":
            if self.memo_put:
                self.memo_put(str(msg["key"]), msg["value"])
            return {}
        raise InputError(f"the release does not serve {op!r}")


def _annotated(msg: Mapping[str, Any]) -> Tensor | ImageSet:
    """The attacker's images, or its annotated clips when masks or keypoints came with them (validated)."""
    x = _images(msg)
    extra = {k: msg.get(k) for k in ("masks", "keypoints")}
    if all(v is None for v in extra.values()):
        return x
    for k, v in extra.items():
        if v is not None and not isinstance(v, Tensor):
            raise InputError(f"attacker-chosen {k}: expected a tensor")
    return ImageSet(x, torch.zeros(len(x), dtype=torch.int64), None, extra["masks"], extra["keypoints"])


def _images(msg: Mapping[str, Any]) -> Tensor:
    from privbench.core.images import check_images

    x = msg.get("images")
    check_images(x, "attacker-chosen images")
    return x


def _serve(conn: Any, proc: Any, on_request: Callable[[str, Mapping[str, Any]], dict]) -> dict[str, Any]:
    """Answer a child's requests until it reports ``done`` (returned) or ``error`` (raised as AttackError)."""
    while True:
        if not conn.poll(0.5):
            if not proc.is_alive():
                raise AttackError("ChildDied", f"the attack process died (exit code {proc.exitcode})")
            continue
        try:
            msg = loads(conn.recv_bytes())
        except EOFError:
            proc.join(5)
            raise AttackError("ChildDied", f"the attack process died (exit code {proc.exitcode})") from None
        op = msg.get("op")
        if op == "done":
            return msg
        if op == "error":
            raise AttackError(str(msg["type"]), str(msg["message"]), str(msg.get("traceback", "")))
        try:
            reply = {"op": "ok", **on_request(str(op), msg)}
        except Exception as e:  # a bad request is the attack's error, reported back to it
            reply = {"op": "error", "message": f"{type(e).__name__}: {e}"}
        conn.send_bytes(pickle.dumps(reply))


def _run_child(target: Callable[[Any], None], payloads: list[bytes],
               on_request: Callable[[str, Mapping[str, Any]], dict]) -> dict[str, Any]:
    ctx = process_context()
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=target, args=(child,), daemon=True)
    proc.start()
    child.close()
    try:
        try:
            while payloads:  # each message is dropped once sent: a video cell's view pickles to about 1 GB, which
                parent.send_bytes(payloads.pop(0))  # the worker would otherwise hold for the whole attack
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child died early; its error report (if any) is read below
        payloads.clear()
        return _serve(parent, proc, on_request)
    finally:
        parent.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def check_state_dict(state: Mapping[str, Tensor], expected: Optional[Mapping[str, Tensor]]) -> None:
    """Refuse a returned state dict whose keys, shapes or dtypes differ from ``expected``'s."""
    if expected is None:
        return
    want = {k: (tuple(v.shape), v.dtype) for k, v in expected.items()}
    got = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    if got != want:
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        raise InputError("training code must return the state dict of the suite's task model; "
                         f"unexpected {extra[:3]}, missing {missing[:3]}, or other shapes/dtypes")


def run_platform(code: bytes, oracle: GradientOracle, plugins: tuple[str, ...], threads: int) -> dict[str, Tensor]:
    """Run pickled attacker training ``code`` on the oracle's training set in a platform child; its state dict."""
    train = oracle.training_set
    envelope = [pickle.dumps({"code": bytes(code), "train": ImageSet(train.images, train.labels),
                             "plugins": plugins, "threads": threads, "requester": os.getpid()})]

    def refuse(op: str, msg: Mapping[str, Any]) -> dict:
        raise InputError("training code has no access to the runner")

    return _run_child(platform_child_main, envelope, refuse)["state"]


def attack_view_release(release: Release, exposed: frozenset[Surface], public: Mapping[str, Any],
                        pipeline: Optional[str] = None) -> ReleaseView:
    """The attack-side view of ``release`` restricted to ``exposed``: plain data plus query proxies
    (``pipeline``: the identity of the defense's training pipeline, when the attack may query it)."""
    keep = {s: s in exposed for s in Surface}
    grads = release.gradients if keep[Surface.GRADIENTS] else None
    transform = None
    if keep[Surface.TRANSFORM] and release.transform is not None:
        transform = TransformProxy(public, has_mask=keep[Surface.MASK] and release.mask_generator is not None)
    return ReleaseView(
        data=release.data if keep[Surface.DATA] else None,
        transform=transform,
        encoder=release.encoder if keep[Surface.ENCODER] else None,
        bitstream=release.bitstream if keep[Surface.BITSTREAM] else None,
        model=release.model if keep[Surface.MODEL] else None,
        gradients=None if grads is None else GradientProxy(grads.model, grads.train_size, grads.on_private),
        mask=release.mask if keep[Surface.MASK] else None,
        synthetic=release.synthetic if keep[Surface.SYNTHETIC] else None,
        # The public claims only: ``extra`` holds the defender's own statistics (some of the private originals).
        meta=ReleaseMeta(epsilon=release.meta.epsilon, delta=release.meta.delta, accountant=release.meta.accountant,
                         bits_per_image=release.meta.bits_per_image),
        pipeline=None if pipeline is None else PipelineProxy(pipeline),
    )


def run_attack_isolated(job: AttackJob, services: DefenderServices) -> AttackOutput:
    """Run ``job`` in an isolated child, serving its queries with ``services``; the attack's output."""
    start = pickle.dumps((job.threads, job.plugins, os.getpid()))  # the child also ends when this worker dies
    done = _run_child(attack_child_main, [start, pickle.dumps(job)], services.handle)
    out = done["output"]
    return AttackOutput(**{k: out.get(k) for k in OUTPUT_FIELDS if k != "extra"}, extra=dict(out.get("extra", {})))


def attack_stream(cell_seed: int, attack_label: str) -> int:
    """The attack's own random stream: a one-way function of the cell seed and the attack's label."""
    return derive_seed(cell_seed, "attack-stream", attack_label)
