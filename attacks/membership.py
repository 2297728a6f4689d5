"""Membership inference on a released model: was a candidate image in the training set?

Methods (one record, one score per method; the runner computes AUC, balanced accuracy and TPR at 1% / 0.1% FPR):
- ``loss``: the global loss threshold (Yeom et al., CSF 2018): score = −cross-entropy.
- ``lira_offline`` / ``lira_online``: the Likelihood Ratio Attack (Carlini et al., IEEE S&P 2022). ``shadows``
  models with the suite's architecture and recipe are trained on a random half of the candidates topped up with
  aux images to the target's own training-set size (:func:`shadow_sizes`; a size mismatch alone moved the same
  models' advantage from 0.198 to 0.284), so each candidate is IN about half of them and OUT of the rest. With the logit-scaled confidence
  ``φ = log p_y − log(1 − p_y)``, online scores ``log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out)``; offline uses only
  the OUT models: ``Φ((φ − μ_out) / σ_out)``. With few shadows the variances are pooled over candidates (the paper's
  "global variance", recommended below 64 shadows).

``adaptive: true`` trains the shadows through the defense's own public pipeline (``view.release.pipeline``: DP-SGD
shadows for dp-sgd, the synthesis pipeline for bn-synthetic), so the IN/OUT distributions are those of the released
model (Carlini et al.'s and Tramèr et al.'s point on adaptive evaluation); they are cached per pipeline. Otherwise
the shadows use the suite's standard recipe, do not depend on the defense, and are shared by every defense of a
suite.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView
from privbench.core.errors import InputError
from privbench.core.hashing import stable_hash, tensor_hash
from privbench.core.images import Access, ImageSet, Modality, Surface
from privbench.core.registry import ATTACKS
from privbench.core.seeding import seeded
from privbench.core.threats import ThreatModel
from privbench.models import build_model, input_channels, map_batched
from privbench.models.batched import group_slices, train_classifiers


def logit_confidence(logits: Tensor, labels: Tensor) -> Tensor:
    """``φ = log p_y − log(1 − p_y)`` computed stably from logits ``(N, K)``; ``(N,)``."""
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return z_y - torch.logsumexp(others, 1)


def _joined(a: ImageSet, b: ImageSet) -> ImageSet:
    """``a`` then ``b``, with their person masks and keypoints when both carry them (identities dropped)."""

    def cat(field: str) -> Optional[Tensor]:
        x, y = getattr(a, field), getattr(b, field)
        return None if x is None or y is None else torch.cat([x, y])

    return ImageSet(cat("images"), cat("labels"), None, cat("masks"), cat("keypoints"))


@ATTACKS.register("membership")
class Membership(Attack):
    """Membership inference: loss threshold and LiRA (offline and online) with cached shadow models."""

    modalities = frozenset({Modality.IMAGE, Modality.VIDEO})

    threat = ThreatModel.MODEL_HOLDER
    requires = frozenset({Surface.MODEL})
    positive_controls = {"memorizer": 0.3}
    access = Access.BLACK_BOX
    needs_candidates = True

    @dataclass(frozen=True)
    class Params:
        shadows: int = 4
        epochs: int = 0  # 0 = the suite's task epochs (the attacker mimics the recipe)
        adaptive: bool = False  # shadows through the defense's own training pipeline

        def __post_init__(self) -> None:
            if isinstance(self.shadows, bool) or self.shadows < 2:
                raise InputError(f"shadows must be an integer >= 2 (some IN and some OUT), got {self.shadows!r}")
            if self.epochs < 0:
                raise InputError("epochs must be >= 0")
            if not isinstance(self.adaptive, bool):
                raise InputError(f"adaptive must be true or false, got {self.adaptive!r}")

    def _shadow_confidences(self, view: AttackView, ctx: AttackContext) -> dict[str, Tensor]:
        """``phi (K, M)`` confidences of each shadow model on the candidates and ``inside (K, M)`` bool."""
        assert view.candidates is not None
        cand, aux, t = view.candidates, view.aux, ctx.task
        epochs = self.params.epochs or t.epochs
        m, k = len(cand), self.params.shadows
        n_in, n_aux = shadow_sizes(m, len(aux), view.train_size)
        g = ctx.generator(salt=313)
        inside = torch.zeros(k, m, dtype=torch.bool)
        picks = []
        for i in range(k):
            pick_c = torch.randperm(m, generator=g)[:n_in]
            pick_a = torch.randperm(len(aux), generator=g)[:n_aux]
            inside[i, pick_c] = True
            picks.append((pick_c, pick_a))

        def train_of(i: int) -> ImageSet:
            return _joined(cand.subset(picks[i][0]), aux.subset(picks[i][1]))

        phis = []
        if self.params.adaptive:
            assert view.release.pipeline is not None and view.release.model is not None
            for i in range(k):
                model = copy.deepcopy(view.release.model).cpu()
                model.load_state_dict(view.release.pipeline(train_of(i)))
                phis.append(logit_confidence(map_batched(model.eval(), cand.images, ctx.device), cand.labels))
        else:  # same architecture and data size: trained together, in groups within memory (models/batched)
            for sl in group_slices(k, n_in + n_aux, cand.images.shape[1:], t.batch_size):
                trains = [train_of(i) for i in range(sl.start, sl.stop)]  # one group's training sets at a time
                models = []
                for i, train in zip(range(sl.start, sl.stop), trains):
                    with seeded(ctx.generator(f"shadow-init-{i}")):
                        models.append(build_model(t.model, input_channels(train.shape), view.num_classes,
                                                  width=t.width))
                train_classifiers(models, trains, epochs=epochs, batch_size=t.batch_size, lr=t.lr,
                                  generators=[ctx.generator(salt=400 + i) for i in range(sl.start, sl.stop)],
                                  device=ctx.device)
                del trains
                phis += [logit_confidence(map_batched(x.eval(), cand.images, ctx.device), cand.labels)
                         for x in models]
        return {"phi": torch.stack(phis), "inside": inside}

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        cand = view.candidates
        model = view.release.model
        if cand is None or model is None:
            raise InputError("membership needs candidates and a released model")
        if self.params.adaptive and view.release.pipeline is None:
            raise InputError("adaptive membership needs the defense's training pipeline (release.pipeline)")
        model = model.to(ctx.device).eval()
        logits = map_batched(model, cand.images, ctx.device)
        model.cpu()
        target_phi = logit_confidence(logits, cand.labels)
        loss = nn.functional.cross_entropy(logits, cand.labels, reduction="none")
        key = stable_hash({"candidates": tensor_hash(cand.images, cand.labels),
                           "aux": tensor_hash(view.aux.images, view.aux.labels), "stream": ctx.stream,
                           "task": [ctx.task.model, ctx.task.width, ctx.task.batch_size, ctx.task.lr, ctx.task.epochs],
                           "params": [self.params.shadows, self.params.epochs], "train_size": view.train_size,
                           "pipeline": view.release.pipeline.identity if self.params.adaptive else None})[:32]
        shadow = ctx.remember(f"shadows-{key}", lambda: self._shadow_confidences(view, ctx))
        phi, inside = shadow["phi"], shadow["inside"]
        return AttackOutput(membership_scores={"loss": -loss, **lira_scores(target_phi, phi, inside)},
                            extra={"shadows": float(self.params.shadows), "adaptive": float(self.params.adaptive)})


def shadow_sizes(candidates: int, aux: int, train_size: Optional[int]) -> tuple[int, int]:
    """``(candidates IN, aux images)`` each shadow trains on: half the candidates, topped up with aux images to the
    target's own training-set size ``train_size`` (public; LiRA's shadows must match the target's training
    distribution, size included: Carlini et al. 2022, §IV), or, without it, half of aux as well."""
    n_in = candidates // 2
    if train_size is None:
        return n_in, aux // 2
    n_in = min(n_in, train_size)
    return n_in, max(0, min(aux, train_size - n_in))


def lira_scores(target: Tensor, phi: Tensor, inside: Tensor) -> dict[str, Tensor]:
    """LiRA from shadow confidences ``phi (K, M)`` with IN mask ``inside (K, M)``; ``target (M,)``.

    Per-candidate means, pooled ("global") standard deviations. Returns ``lira_online`` and ``lira_offline`` (M,).
    """
    from scipy.stats import norm

    phi_np, ins = phi.double().numpy(), inside.numpy()
    t = target.double().numpy()
    out_n, in_n = (~ins).sum(0), ins.sum(0)
    mu_out = np.where(out_n > 0, np.where(~ins, phi_np, 0).sum(0) / np.maximum(out_n, 1), np.nan)
    mu_in = np.where(in_n > 0, np.where(ins, phi_np, 0).sum(0) / np.maximum(in_n, 1), np.nan)
    glob_out, glob_in = phi_np[~ins], phi_np[ins]
    mu_out = np.where(np.isnan(mu_out), glob_out.mean(), mu_out)
    mu_in = np.where(np.isnan(mu_in), glob_in.mean(), mu_in)
    sd_out = float(np.std(phi_np[~ins] - np.broadcast_to(mu_out, phi_np.shape)[~ins])) + 1e-6
    sd_in = float(np.std(phi_np[ins] - np.broadcast_to(mu_in, phi_np.shape)[ins])) + 1e-6
    online = norm.logpdf(t, mu_in, sd_in) - norm.logpdf(t, mu_out, sd_out)
    offline = norm.logcdf(t, mu_out, sd_out)
    return {"lira_online": torch.from_numpy(online), "lira_offline": torch.from_numpy(offline)}
