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

import contextlib
import dataclasses
import io
import multiprocessing as mp
import os
import pickle
import tempfile
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

import torch
from torch import Tensor, nn

from privbench.core.contracts import AttackContext, AttackOutput, AttackView, ReleaseView, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Surface
from privbench.core.release import GradientOracle, Release, ReleaseMeta, TrainingCode
from privbench.core.seeding import derive_seed

_OUTPUT_FIELDS = tuple(f.name for f in dataclasses.fields(AttackOutput))


class AttackError(RuntimeError):
    """An attack raised in its child process (``type_name`` and ``remote_traceback`` say what and where)."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name, self.remote_traceback = type_name, remote_traceback


def dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def loads(blob: bytes) -> Any:
    """Decode a message from a child: tensors, numbers, strings, bytes and containers only."""
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def process_context() -> Any:
    """A multiprocessing context whose children start from a process that never held private data."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        from privbench.run.plugins import plugin_modules

        # torch._inductor.config: imported by torch.use_deterministic_algorithms (1.5 s), once here, not per child.
        ctx.set_forkserver_preload(["torch._inductor.config", "privbench.run.isolation", "privbench.core.registry",
                                    *plugin_modules()])
        return ctx
    return mp.get_context("spawn")


# ----------------------------------------------------------------------------------------------------------------
# Child side: proxies for the query surfaces.


class _Channel:
    """Request/reply over the pipe to the runner (child side)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def request(self, op: str, **payload: Any) -> dict[str, Any]:
        self._conn.send_bytes(dumps({"op": op, **payload}))
        reply = pickle.loads(self._conn.recv_bytes())  # from the runner: trusted
        if reply.get("op") == "error":
            raise InputError(reply["message"])
        return reply

    def memo(self, key: str, make: Callable[[], dict]) -> dict:
        hit = self.request("memo_get", key=key)
        if hit["hit"]:
            return hit["value"]
        value = make()
        self.request("memo_put", key=key, value=value)
        return value


class _Proxy:
    _channel: Optional[_Channel] = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_channel"}

    def _request(self, op: str, **payload: Any) -> dict[str, Any]:
        if self._channel is None:
            raise RuntimeError("this surface is only usable inside an attack process")
        return self._channel.request(op, **payload)


class TransformProxy(_Proxy):
    """:class:`~privbench.core.contracts.TransformAccess` served by the defender over the pipe."""

    def __init__(self, public: Mapping[str, Any], has_mask: bool) -> None:
        self.public, self.has_mask = dict(public), has_mask

    def __call__(self, images: Tensor | ImageSet) -> Tensor:
        if isinstance(images, ImageSet):  # annotated clips: only pixels, masks and keypoints cross
            payload = {k: v.detach().cpu().contiguous() for k, v in
                       (("images", images.images), ("masks", images.masks), ("keypoints", images.keypoints))
                       if v is not None}
            return self._request("transform", **payload)["images"]
        return self._request("transform", images=images.detach().cpu().contiguous())["images"]

    def with_mask(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if not self.has_mask:
            raise InputError("this release exposes no mask surface")
        reply = self._request("transform_mask", images=images.detach().cpu().contiguous())
        return reply["images"], reply["mask"]


class PipelineProxy(_Proxy):
    """:class:`~privbench.core.contracts.PipelineAccess` served by the defender over the pipe."""

    def __init__(self, identity: str) -> None:
        self.identity = identity

    def __call__(self, train: ImageSet) -> Mapping[str, Tensor]:
        extra = {k: v.detach().cpu().contiguous() for k, v in (("masks", train.masks), ("keypoints", train.keypoints))
                 if v is not None}  # annotated clips, for defenses whose person estimator reads them
        return self._request("pipeline", images=train.images.detach().cpu().contiguous(),
                             labels=train.labels.detach().cpu().long(), **extra)["state"]


class GradientProxy(_Proxy):
    """:class:`~privbench.core.contracts.GradientAccess` served by the defender over the pipe."""

    def __init__(self, model: nn.Module, train_size: int, on_private: bool) -> None:
        self.model, self.train_size, self.on_private = model, train_size, on_private

    def __call__(self, idx: Tensor) -> tuple[Tensor, ...]:
        reply = self._request("gradients", idx=torch.as_tensor(idx, dtype=torch.long).reshape(-1).cpu())
        dev = next(self.model.parameters()).device
        return tuple(g.to(dev) for g in reply["grads"])

    def run_training(self, code: TrainingCode) -> Mapping[str, Tensor]:
        return self._request("train", code=pickle.dumps(code))["state"]


@dataclass
class AttackJob:
    """What a child needs to run one attack cell (pickled by the runner, trusted)."""

    attack_id: str
    params: Any
    view: AttackView
    device: str
    task: TaskConfig
    stream: int
    threads: int
    plugins: tuple[str, ...]


def _bind(view: AttackView, channel: _Channel) -> None:
    for proxy in (view.release.transform, view.release.gradients, view.release.pipeline):
        if isinstance(proxy, _Proxy):
            proxy._channel = channel


def exit_with_parent(parent: Optional[int] = None) -> None:
    """A daemon thread ending this process when the process that started it goes away (e.g. the runner was
    killed): attack and platform children, pool workers and the pool's queue manager. ``parent``: the pid the
    starter had, passed by it; without it a process that starts up slowly (a loaded machine) and finds its starter
    already dead would take its new parent (init) for the starter and never exit."""
    import threading
    import time

    if parent is None:
        parent = os.getppid()
    elif os.getppid() != parent:
        os._exit(3)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="privbench-parent-watch").start()


@contextlib.contextmanager
def _child_environment(threads: int, plugins: tuple[str, ...]) -> Iterator[None]:
    """Threads, determinism, plugins, and an empty working directory (removed afterwards), so no relative path
    reaches the run's directory."""
    from privbench.core.seeding import set_deterministic
    from privbench.run.plugins import load_plugins

    exit_with_parent()
    torch.set_num_threads(max(1, threads))
    set_deterministic()
    load_plugins(plugins)
    with tempfile.TemporaryDirectory(prefix="privbench-child-") as tmp:
        os.chdir(tmp)
        yield


def _send_error(conn: Any, e: BaseException) -> None:
    conn.send_bytes(dumps({"op": "error", "type": type(e).__name__, "message": str(e),
                           "traceback": traceback.format_exc(limit=8)}))


def _attack_child(conn: Any) -> None:
    """Child entry: receive an :class:`AttackJob`, run the attack, send its output as plain tensors."""
    try:
        threads, plugins = pickle.loads(conn.recv_bytes())  # from the runner: trusted
        with _child_environment(threads, plugins):
            from privbench.core.registry import ATTACKS

            job: AttackJob = pickle.loads(conn.recv_bytes())  # after the plugins: their classes must resolve
            channel = _Channel(conn)
            _bind(job.view, channel)
            attack = ATTACKS.get(job.attack_id)(job.params)
            ctx = AttackContext(device=torch.device(job.device), task=job.task, stream=job.stream,
                                memo=channel.memo)
            out = attack.run(job.view, ctx)
        if not isinstance(out, AttackOutput):
            raise TypeError(f"attack {job.attack_id!r} returned {type(out).__name__}, not AttackOutput")
        payload = {k: getattr(out, k) for k in _OUTPUT_FIELDS if getattr(out, k) is not None}
        payload["extra"] = {str(k): float(v) for k, v in out.extra.items()}
        conn.send_bytes(dumps({"op": "done", "output": payload}))
    except BaseException as e:  # reported to the runner, which records the cell as failed
        _send_error(conn, e)
    finally:
        conn.close()


def _platform_child(conn: Any) -> None:
    """Child entry for the malicious-training threat: run attacker code on the training set, return weights."""
    try:
        msg = pickle.loads(conn.recv_bytes())  # the runner's envelope (trusted); ``code`` is the attacker's bytes
        with _child_environment(msg["threads"], msg["plugins"]):
            code = pickle.loads(msg["code"])
            state = code(msg["train"])
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise TypeError("training code must return a state dict (str -> Tensor)")
        conn.send_bytes(dumps({"op": "done", "state": {str(k): v.detach().cpu() for k, v in state.items()}}))
    except BaseException as e:
        _send_error(conn, e)
    finally:
        conn.close()


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
            for payload in payloads:
                parent.send_bytes(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child died early; its error report (if any) is read below
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
    envelope = pickle.dumps({"code": bytes(code), "train": ImageSet(train.images, train.labels),
                             "plugins": plugins, "threads": threads})

    def refuse(op: str, msg: Mapping[str, Any]) -> dict:
        raise InputError("training code has no access to the runner")

    return _run_child(_platform_child, [envelope], refuse)["state"]


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
    done = _run_child(_attack_child, [pickle.dumps((job.threads, job.plugins)), pickle.dumps(job)], services.handle)
    out = done["output"]
    return AttackOutput(**{k: out.get(k) for k in _OUTPUT_FIELDS if k != "extra"}, extra=dict(out.get("extra", {})))


def attack_stream(cell_seed: int, attack_label: str) -> int:
    """The attack's own random stream: a one-way function of the cell seed and the attack's label."""
    return derive_seed(cell_seed, "attack-stream", attack_label)
