"""Isolation: an attack sees exactly its threat model's surfaces. A deliberately nosy attack tries the known paths
to private data and secrets and reaches none of them; an attack that mutates its view changes no other cell."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from privbench.core.records import iter_records
from privbench.core.specs import SplitConfig
from privbench.data import load_splits
from privbench.run.config import load_suite
from privbench.run.plugins import load_plugin_file
from privbench.run.runner import run_suite
from privbench.run.worker import RunOptions
from tests.conftest import write_suite

NOSY = '''
import gc, hashlib, json, os
from dataclasses import dataclass
import torch
from torch import nn
from privbench.core.contracts import Attack, AttackOutput
from privbench.core.images import Access, Surface
from privbench.core.registry import ATTACKS

SEED = 4242


def _reachable(root, depth=3):
    """Objects reachable from ``root`` through attributes, closures, bound-method selves and containers."""
    seen, todo, out = set(), [(root, 0)], []
    while todo:
        obj, d = todo.pop()
        if id(obj) in seen or d > depth:
            continue
        seen.add(id(obj))
        out.append(obj)
        kids = []
        for name in ("__self__", "__closure__", "__func__", "__wrapped__"):
            kids.append(getattr(obj, name, None))
        if getattr(obj, "__closure__", None):
            kids += [c.cell_contents for c in obj.__closure__]
        if hasattr(obj, "__dict__") and not isinstance(obj, type):
            kids += list(vars(obj).values())
        if isinstance(obj, (list, tuple, set)):
            kids += list(obj)
        if isinstance(obj, dict):
            kids += list(obj.values())
        todo += [(k, d + 1) for k in kids if k is not None]
    return out


@ATTACKS.register("nosy")
class Nosy(Attack):
    @dataclass(frozen=True)
    class Params:
        hashes_path: str = ""

    requires = frozenset()
    uses = frozenset(Surface)
    access = Access.WHITE_BOX

    def compatible(self, surfaces):
        return None

    def run(self, view, ctx):
        rel, found = view.release, {}
        grads = rel.gradients
        found["train_images"] = float(grads is not None and any(hasattr(grads, n) for n in
                                      ("train_images", "train_labels", "_train", "training_set", "_secret", "seed")))
        t = rel.transform
        found["transform_self_is_defense"] = float(t is not None and type(getattr(t.__call__, "__self__", None))
                                                   .__module__.startswith("defenses"))
        modules = [o for root in (t, grads) if root is not None for o in _reachable(root)
                   if isinstance(o, nn.Module) and (grads is None or o is not grads.model)
                   and not any(o is m for m in (grads.model.modules() if grads is not None else []))]
        found["private_modules_via_surfaces"] = float(len(modules))
        closures = [o for o in _reachable(t) if getattr(o, "__closure__", None)] if t is not None else []
        found["closure_cells"] = float(len(closures))
        found["seed_in_ctx"] = float(hasattr(ctx, "seed") or SEED in [v for v in vars(ctx).values()
                                                                       if isinstance(v, int)])
        strings = [o for o in _reachable(ctx) + _reachable(view, 2) if isinstance(o, (str, os.PathLike))]
        found["cache_path"] = float(any("cache" in str(s) or "records" in str(s) for s in strings))
        found["cwd_is_run_dir"] = float(os.path.exists("records") or os.path.exists("cache"))
        if t is not None:  # the transform works as a query and gives fresh secret randomness
            a, b = t(view.aux.images[:4]), t(view.aux.images[:4])
            found["transform_shape_ok"] = float(a.shape == view.aux.images[:4].shape)
        if grads is not None:
            g = grads(view.targets[:1])
            found["gradient_count"] = float(len(g))
        # The memo's keys name no path: a traversal attempt is just another key.
        got = ctx.remember("/../../../escaped", lambda: {"v": torch.ones(1)})
        found["memo_roundtrip"] = float(got["v"].sum())
        hashes = []  # every image-shaped tensor alive in this process, for the test to compare with the originals
        for o in gc.get_objects():
            if isinstance(o, torch.Tensor) and o.ndim == 4 and tuple(o.shape[1:]) == tuple(view.image_shape):
                q = (o.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
                hashes += [hashlib.sha256(x.numpy().tobytes()).hexdigest() for x in q]
        with open(self.params.hashes_path, "a") as f:
            f.write(json.dumps(hashes) + "\\n")
        recon = view.aux.images.mean(0, keepdim=True).expand(len(view.targets), *view.image_shape).clone()
        return AttackOutput(reconstructions=recon, extra=found)


class Smuggle:
    """Training code that returns its training set instead of weights."""

    def __call__(self, train):
        return {"images": train.images, "labels": train.labels.float()}


@ATTACKS.register("smuggler")
class Smuggler(Attack):
    requires = frozenset({Surface.GRADIENTS})
    access = Access.WHITE_BOX

    def run(self, view, ctx):
        state = view.release.gradients.run_training(Smuggle())
        return AttackOutput(reconstructions=state["images"][:len(view.targets)])


@ATTACKS.register("mutator")
class Mutator(Attack):
    """Vandalises everything it was given."""
    requires = frozenset()
    uses = frozenset(Surface)
    access = Access.WHITE_BOX

    def compatible(self, surfaces):
        return None

    def run(self, view, ctx):
        rel = view.release
        for x in (rel.data.images if rel.data is not None else None, view.aux.images, rel.mask):
            if x is not None:
                x.zero_()
        for m in (rel.model, rel.encoder, rel.gradients.model if rel.gradients is not None else None):
            if m is not None:
                with torch.no_grad():
                    for p in m.parameters():
                        p.zero_()
        return AttackOutput(reconstructions=torch.zeros(len(view.targets), *view.image_shape))


@ATTACKS.register("reader")
class Reader(Attack):
    """Returns the released images of the targets and reports what the model and aux look like."""
    requires = frozenset({Surface.DATA})
    uses = frozenset({Surface.MODEL})
    access = Access.WHITE_BOX

    def run(self, view, ctx):
        extra = {"aux_sum": float(view.aux.images.sum())}
        if view.release.model is not None:
            extra["model_abs_sum"] = float(sum(p.abs().sum() for p in view.release.model.parameters()))
        return AttackOutput(reconstructions=view.release.data.images[view.targets].clone(), extra=extra)
'''

SPLITS = {"private": 100, "aux": 100, "test": 60, "targets": 30}


@pytest.fixture
def nosy_plugin(tmp_path) -> Path:
    path = tmp_path / "nosy.py"
    path.write_text(NOSY)
    load_plugin_file(path)
    return path


def test_a_nosy_attack_reaches_no_private_data_or_secret(tmp_path, nosy_plugin) -> None:
    suite = write_suite(tmp_path / "nosy.yaml", f"""
name: nosy
datasets: [digits]
seeds: [4242]
splits: {json.dumps(SPLITS)}
task: {{model: convnet, width: 4, epochs: 1}}
defenses:
  - id: noise
    params: {{sigma: 0.5}}
  - id: masking
    params: {{masked: 0.5}}
  - id: dp-sgd
    params: {{epochs: 1}}
attacks: [{{id: nosy, params: {{hashes_path: {tmp_path / "hashes.jsonl"}}}}}, smuggler]
""")
    hashes_file = tmp_path / "hashes.jsonl"
    out = tmp_path / "out"
    summary = run_suite(load_suite(suite), RunOptions(out=out, progress=False, plugins=(str(nosy_plugin),)))
    assert summary.ok == 3, summary.failed_cells
    # Training code that tries to return the training set instead of weights is refused.
    (smuggled,) = [r for _, r in iter_records(out / "records") if r["attack"]["id"] == "smuggler"
                   and r["status"] != "skipped"]
    assert smuggled["status"] == "failed" and "must return the state dict" in smuggled["reason"]
    records = {r["defense"]["id"]: r for _, r in iter_records(out / "records") if r["attack"]["id"] == "nosy"}
    assert all(p.parent == out / "cache" for p in out.rglob("*.pt")) and not list(tmp_path.rglob("escaped*"))
    assert all(r["metrics"]["privacy"]["attack_memo_roundtrip"] == 1.0 for r in records.values())
    for defense, rec in records.items():
        p = rec["metrics"]["privacy"]
        for probe in ("train_images", "transform_self_is_defense", "private_modules_via_surfaces", "closure_cells",
                      "seed_in_ctx", "cache_path", "cwd_is_run_dir"):
            assert p[f"attack_{probe}"] == 0.0, (defense, probe)
    assert records["noise"]["metrics"]["privacy"]["attack_transform_shape_ok"] == 1.0
    assert records["dp-sgd"]["metrics"]["privacy"]["attack_gradient_count"] > 0
    # No image of the private split exists anywhere in the attack processes' memory.
    splits = load_splits("digits", SplitConfig(**SPLITS), 4242)
    q = (splits.private.images * 255).round().to(torch.uint8)
    private = {hashlib.sha256(x.numpy().tobytes()).hexdigest() for x in q}
    aux = {hashlib.sha256(x.numpy().tobytes()).hexdigest()
           for x in (splits.aux.images * 255).round().to(torch.uint8)}
    seen = [set(json.loads(line)) for line in hashes_file.read_text().splitlines()]
    assert len(seen) == 3 and all(len(s & aux) > 0 for s in seen)  # the scan does find what the view holds
    for s in seen:
        assert not (s & (private - aux)), "a private original was reachable in an attack process"


def test_an_attack_that_mutates_its_view_changes_no_other_cell(tmp_path, nosy_plugin) -> None:
    def reader_after(attacks: str, out: Path) -> dict:
        suite = write_suite(tmp_path / "mut.yaml", f"""
name: mut
datasets: [digits]
splits: {json.dumps(SPLITS)}
task: {{model: convnet, width: 4, epochs: 1}}
defenses: [none]
attacks: {attacks}
""")
        run_suite(load_suite(suite), RunOptions(out=out, progress=False, plugins=(str(nosy_plugin),)))
        return {r["attack"]["id"]: r for _, r in iter_records(out / "records")}["reader"]["metrics"]["privacy"]

    # In one job the mutator runs first on the in-memory release, then the reader; alone, the reader sees the same.
    after = reader_after("[mutator, reader]", tmp_path / "a")
    alone = reader_after("[reader]", tmp_path / "b")
    assert after["psnr"] == alone["psnr"] == 100.0
    assert after["attack_aux_sum"] == alone["attack_aux_sum"] > 0
    assert after["attack_model_abs_sum"] == alone["attack_model_abs_sum"] > 0
