"""Gradient-matching attacks on the shared update (``gradients`` surface): the server knows the global model and
receives the gradient of a training batch, and optimises dummy images until their gradient matches it.

- ``gradient-dlg``: Deep Leakage from Gradients (Zhu et al., NeurIPS 2019): L-BFGS on the squared L2 distance
  between gradients, the dummy label (soft, as logits) optimised jointly with the images.
- ``gradient-idlg``: improved DLG (Zhao et al., arXiv 2001.02610): the label is read from the last layer's
  gradient, then only the images are optimised (L-BFGS, L2 distance).
- ``gradient-ig``: Inverting Gradients (Geiping et al., NeurIPS 2020): cosine distance over all parameters plus a
  total-variation prior, Adam on the sign of the gradient with step decay, images boxed to [0, 1], several random
  restarts (the lowest final loss wins); labels from the last layer as in iDLG.

Batches of 1 to 8 images. A batch's gradient does not say which image is which, so reconstructions are returned
with batch ``groups`` and the runner matches them to the originals. Against a non-private training set (synthetic
data), batches are drawn from that set (``sources``) and scored against the nearest private original of the class.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView
from privbench.core.errors import InputError
from privbench.core.images import Access, Modality, Surface
from privbench.core.registry import ATTACKS
from privbench.core.release import GradientAccess
from privbench.metrics.image import total_variation

MAX_BATCH = 8


def infer_labels(grads: tuple[Tensor, ...], model: nn.Module, batch: int) -> Tensor:
    """Labels of a batch from the last linear layer's gradient (Zhao et al. 2020; Yin et al. 2021 for batches).

    With softmax cross-entropy the bias gradient of class ``k`` is ``mean_i(p_ik - [y_i = k])``, negative only for
    classes present in the batch. Returns the ``batch`` most negative classes (distinct labels assumed; for one
    image this is iDLG's exact rule). Without a bias the weight-gradient row sums are used.
    """
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(zip(names, grads))
    lname = next(n for n, m in model.named_modules() if m is last)
    signal = params[f"{lname}.bias"] if last.bias is not None else params[f"{lname}.weight"].sum(1)
    if batch > signal.numel():
        raise InputError(f"batch size {batch} exceeds the number of classes {signal.numel()}; labels cannot be "
                         "inferred from the last layer")
    return torch.argsort(signal)[:batch]


def _grads(model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, ...]:
    """Differentiable gradients of the mean cross-entropy (``target``: labels ``(B,)`` or soft labels ``(B,K)``)."""
    logits = model(x)
    if target.is_floating_point():
        loss = torch.sum(-F.softmax(target, -1) * F.log_softmax(logits, -1), -1).mean()
    else:
        loss = F.cross_entropy(logits, target)
    return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], create_graph=True)


def l2_distance(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> Tensor:
    return sum(((x - y) ** 2).sum() for x, y in zip(a, b))


def cosine_distance(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> Tensor:
    dot = sum((x * y).sum() for x, y in zip(a, b))
    na = torch.sqrt(sum((x ** 2).sum() for x in a))
    nb = torch.sqrt(sum((y ** 2).sum() for y in b))
    return 1 - dot / (na * nb + 1e-12)


class _GradientAttack(Attack):
    """Shared loop: pick training batches, ask the oracle for their update, invert each batch (images or clips:
    the dummy input takes the originals' shape)."""

    modalities = frozenset({Modality.IMAGE, Modality.VIDEO})
    requires = frozenset({Surface.GRADIENTS})
    access = Access.WHITE_BOX
    positive_controls = {"none": 0.3}  # the plain update of one batch: what gradient inversion must invert

    @dataclass(frozen=True)
    class Params:
        batch_size: int = 1
        targets: int = 8  # how many training images to attack (the first targets, in batches)
        steps: int = 300
        restarts: int = 1

        def __post_init__(self) -> None:
            _check_common(self)

    @abstractmethod
    def invert(self, model: nn.Module, grads: tuple[Tensor, ...], shape: tuple[int, ...], num_classes: int,
               generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Return ``(images (B,C,H,W) in [0,1], final loss scalar)`` for one batch."""

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        oracle: Optional[GradientAccess] = view.release.gradients
        assert oracle is not None
        p = self.params
        n = min(p.targets, len(view.targets) if oracle.on_private else oracle.train_size)
        n -= n % p.batch_size
        if n == 0:
            raise InputError(f"{self.id}: batch_size {p.batch_size} is larger than the {p.targets} targets")
        sources = view.targets[:n] if oracle.on_private else torch.arange(n)
        model = oracle.model.to(ctx.device)
        recs, losses = [], []
        g = ctx.generator(salt=61)
        for i in range(0, n, p.batch_size):
            true = tuple(t.to(ctx.device) for t in oracle(sources[i:i + p.batch_size]))
            best: Optional[tuple[Tensor, Tensor]] = None
            for _ in range(p.restarts):
                x, loss = self.invert(model, true, (p.batch_size,) + tuple(view.image_shape), view.num_classes, g)
                if best is None or float(loss) < float(best[1]):
                    best = (x, loss)
            assert best is not None
            recs.append(best[0].detach().cpu())
            losses.append(float(best[1]))
        model.cpu()
        groups = torch.arange(n) // p.batch_size
        return AttackOutput(reconstructions=torch.cat(recs).clamp(0, 1), groups=groups, sources=sources,
                            extra={"gradient_distance": sum(losses) / len(losses), "batch_size": float(p.batch_size),
                                   "attacked": float(n)})


def _check_common(p: "_GradientAttack.Params") -> None:
    if isinstance(p.batch_size, bool) or not 1 <= p.batch_size <= MAX_BATCH:
        raise InputError(f"batch_size must be an integer in [1, {MAX_BATCH}], got {p.batch_size!r}")
    if p.targets < 1 or p.steps < 1 or p.restarts < 1:
        raise InputError("targets, steps and restarts must be >= 1")


def _lbfgs(params: list[Tensor], loss_fn, steps: int) -> Tensor:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, history_size=100, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    return loss_fn().detach()


@ATTACKS.register("gradient-dlg")
class DLG(_GradientAttack):
    """DLG (Zhu et al., NeurIPS 2019): L-BFGS on the L2 gradient distance; dummy images and labels jointly."""

    def invert(self, model, grads, shape, num_classes, generator):
        x = torch.rand(shape, generator=generator).to(grads[0].device).requires_grad_(True)
        y = torch.randn((shape[0], num_classes), generator=generator).to(grads[0].device).requires_grad_(True)
        loss = _lbfgs([x, y], lambda: l2_distance(_grads(model, x, y), grads), self.params.steps)
        return x.detach(), loss


@ATTACKS.register("gradient-idlg")
class IDLG(_GradientAttack):
    """iDLG (Zhao et al. 2020): label from the last layer's gradient, then L-BFGS on the L2 distance."""

    def invert(self, model, grads, shape, num_classes, generator):
        labels = infer_labels(grads, model, shape[0]).to(grads[0].device)
        x = torch.rand(shape, generator=generator).to(grads[0].device).requires_grad_(True)
        loss = _lbfgs([x], lambda: l2_distance(_grads(model, x, labels), grads), self.params.steps)
        return x.detach(), loss


@ATTACKS.register("gradient-ig")
class InvertingGradients(_GradientAttack):
    """Inverting Gradients (Geiping et al., NeurIPS 2020): cosine distance + TV, signed Adam, restarts."""

    @dataclass(frozen=True)
    class Params:
        batch_size: int = 1
        targets: int = 8
        steps: int = 300
        restarts: int = 2
        lr: float = 0.1
        tv: float = 1e-2

        def __post_init__(self) -> None:
            _check_common(self)
            if not self.lr > 0 or self.tv < 0:
                raise InputError("lr must be > 0 and tv >= 0")

    def invert(self, model, grads, shape, num_classes, generator):
        p = self.params
        dev = grads[0].device
        labels = infer_labels(grads, model, shape[0]).to(dev)
        x = torch.rand(shape, generator=generator).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=p.lr)
        milestones = [int(p.steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)

        def objective() -> Tensor:
            return cosine_distance(_grads(model, x, labels), grads) + p.tv * total_variation(x).mean()

        for _ in range(p.steps):
            opt.zero_grad(set_to_none=True)
            loss = objective()
            (x.grad,) = torch.autograd.grad(loss, [x])
            x.grad.sign_()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        final = objective().detach()
        return x.detach(), final
