"""The child side of attack isolation (:mod:`privbench.run.isolation` for the design): the wire encoding shared with
the runner side, the child's start-up (thread count, plugins, an exit when the parent dies), the proxies through
which an attack queries ``transform`` / ``pipeline`` / ``gradients`` surfaces, and the attack and platform children's
entry points."""

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

from privbench.core.contracts import AttackContext, AttackOutput, AttackView, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import ImageSet
from privbench.core.release import TrainingCode

OUTPUT_FIELDS = tuple(f.name for f in dataclasses.fields(AttackOutput))




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


@contextlib.contextmanager
def _child_environment(threads: int, plugins: tuple[str, ...], requester: Optional[int]) -> Iterator[None]:
    """Threads, determinism, plugins, an exit when the requesting worker dies (``requester``: its pid), and an
    empty working directory (removed afterwards), so no relative path reaches the run's directory."""
    from privbench.run.startup import start_process

    start_process(threads, plugins, requester=requester)
    with tempfile.TemporaryDirectory(prefix="privbench-child-") as tmp:
        os.chdir(tmp)
        yield


def _send_error(conn: Any, e: BaseException) -> None:
    conn.send_bytes(dumps({"op": "error", "type": type(e).__name__, "message": str(e),
                           "traceback": traceback.format_exc(limit=8)}))


def attack_child_main(conn: Any) -> None:
    """Child entry: receive an :class:`AttackJob`, run the attack, send its output as plain tensors."""
    try:
        threads, plugins, requester = pickle.loads(conn.recv_bytes())  # from the runner: trusted
        with _child_environment(threads, plugins, requester):
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
        payload = {k: getattr(out, k) for k in OUTPUT_FIELDS if getattr(out, k) is not None}
        payload["extra"] = {str(k): float(v) for k, v in out.extra.items()}
        conn.send_bytes(dumps({"op": "done", "output": payload}))
    except BaseException as e:  # reported to the runner, which records the cell as failed
        _send_error(conn, e)
    finally:
        conn.close()


def platform_child_main(conn: Any) -> None:
    """Child entry for the malicious-training threat: run attacker code on the training set, return weights."""
    try:
        msg = pickle.loads(conn.recv_bytes())  # the runner's envelope (trusted); ``code`` is the attacker's bytes
        with _child_environment(msg["threads"], msg["plugins"], msg.get("requester")):
            code = pickle.loads(msg["code"])
            state = code(msg["train"])
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise TypeError("training code must return a state dict (str -> Tensor)")
        conn.send_bytes(dumps({"op": "done", "state": {str(k): v.detach().cpu() for k, v in state.items()}}))
    except BaseException as e:
        _send_error(conn, e)
    finally:
        conn.close()
