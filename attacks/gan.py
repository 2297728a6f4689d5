"""GAN attack on a released classifier (after Hitaj, Ateniese & Pérez-Cruz, "Deep Models Under the GAN", CCS 2017).

Hitaj et al.'s adversary joins collaborative training and uses the shared model as the discriminator of a local
GAN, so that the generator learns class-representative images of a class it has no data of. privbench attacks a
*released* (frozen) model, so the shared model cannot be trained with a "fake" class.

**Assumptions** (the benchmark's threat model for this attack):
- A class-conditional generator ``G(z, c)`` is trained so that the frozen released model outputs ``c``
  (cross-entropy, back-propagated through the model), plus a realism term and a TV prior.
- The adversary has no data of the attacked class, as in Hitaj et al.: realism comes from **one critic per attacked
  class**. Critic ``c`` is trained only on aux images of the *other* classes (real) against generated images of
  class ``c`` (fake), and only it judges class ``c``'s generated images. It never receives an aux image of class
  ``c``. It teaches "looks like a real image of this domain", not "looks like class ``c``".
- The generator is conditioned by concatenating ``z`` and a class embedding, normalised with GroupNorm (no
  train/eval switch) and upsamples by nearest-neighbour + convolution. On the quick budget (mnist5k, 150 steps of
  32, ConvNet-32 at 0.86 accuracy) the released model classifies all generated images as their attacked class and an
  independent classifier 75–100% of them; the prototypes of one class are nearly identical (``z`` is mostly ignored).
Outputs ``per_class`` images per class, scored by the runner against the nearest private original of that class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView
from privbench.core.errors import InputError
from privbench.core.images import Access, ImageSet, Surface
from privbench.core.registry import ATTACKS
from privbench.core.seeding import seeded
from privbench.core.threats import ThreatModel
from privbench.metrics.image import total_variation

#: ``hook(c, real_labels (n,), fake_labels (n,))``: called with the labels of every batch critic ``c`` is trained on.
CriticHook = Callable[[int, Tensor, Tensor], None]


class Generator(nn.Module):
    """``(z (N, z_dim), c (N,))`` -> images ``(N, C, H, W)`` in [0, 1]: ``[z, embed(c)]`` -> FC -> two (GroupNorm,
    ReLU, 2× nearest upsampling, 3×3 conv) stages -> sigmoid, cropped to ``(H, W)``."""

    def __init__(self, z_dim: int, num_classes: int, shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        c, h, w = shape
        self.h0, self.w0, self.shape, self.width = -(-h // 4), -(-w // 4), shape, width
        self.embed = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Linear(2 * z_dim, width * self.h0 * self.w0)
        self.net = nn.Sequential(
            nn.GroupNorm(8, width), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(width, width // 2, 3, 1, 1),
            nn.GroupNorm(8, width // 2), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(width // 2, c, 3, 1, 1))

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        h = self.fc(torch.cat([z, self.embed(c)], 1)).view(-1, self.width, self.h0, self.w0)
        return torch.sigmoid(self.net(h)[..., : self.shape[1], : self.shape[2]])


class Critic(nn.Module):
    """Real-vs-generated discriminator ``(N, C, H, W)`` -> logits ``(N,)``."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


def leave_one_class_out(labels: Tensor, num_classes: int) -> list[Tensor]:
    """Per class ``c``, the indices of ``labels (M,)`` that are *not* ``c``: the only real images critic ``c`` sees."""
    return [torch.nonzero(labels != c).flatten() for c in range(num_classes)]


def train_generator(model: nn.Module, aux: ImageSet, num_classes: int, p: GANAttack.Params, g: torch.Generator,
                    device: torch.device, hook: Optional[CriticHook] = None) -> Generator:
    """Train ``G(z, c)`` against the frozen ``model`` (logits ``(N, num_classes)``) with per-class critics.

    Each step draws ``p.batch_size`` classes and latents; critic ``c`` takes one step on the generated images of
    class ``c`` against as many aux images of :func:`leave_one_class_out` (``hook`` sees their labels), then the
    generator takes one step on cross-entropy + ``p.w_adv`` · non-saturating critic loss + ``p.tv`` · TV.
    Returns the generator in eval mode.
    """
    channels, h, w = aux.images.shape[1:]
    with seeded(g):
        gen = Generator(p.z_dim, num_classes, (channels, h, w)).to(device)
        critics = nn.ModuleList([Critic(channels) for _ in range(num_classes)]).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=p.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critics.parameters(), lr=p.lr, betas=(0.5, 0.999))
    pools = leave_one_class_out(aux.labels, num_classes)
    for _ in range(p.steps):
        c = torch.randint(0, num_classes, (p.batch_size,), generator=g)
        z = torch.randn(p.batch_size, p.z_dim, generator=g)
        fake = gen(z.to(device), c.to(device))
        judged = [(k, (c == k).to(device)) for k in c.unique().tolist() if p.w_adv > 0 and len(pools[k])]
        if judged:
            critics.requires_grad_(True)
            d_loss = fake.new_zeros(())
            for k, at in judged:
                pick = pools[k][torch.randint(0, len(pools[k]), (int(at.sum()),), generator=g)]
                if hook is not None:
                    hook(k, aux.labels[pick], c[at.cpu()])
                real = aux.images[pick].to(device)
                d_loss = d_loss + F.softplus(-critics[k](real)).sum() + F.softplus(critics[k](fake[at].detach())).sum()
            opt_d.zero_grad(set_to_none=True)
            (d_loss / p.batch_size).backward()
            opt_d.step()
            critics.requires_grad_(False)
        adv = sum((F.softplus(-critics[k](fake[at])).sum() for k, at in judged), fake.new_zeros(())) / p.batch_size
        g_loss = F.cross_entropy(model(fake), c.to(device)) + p.w_adv * adv + p.tv * total_variation(fake).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    return gen.eval()


def refine(model: nn.Module, images: Tensor, labels: Tensor, p: "GANAttack.Params") -> Tensor:
    """Model inversion in pixel space (Fredrikson, Jha & Ristenpart, CCS 2015), started from the generator's
    prototypes ``images (N, C, H, W)``: ``p.refine_steps`` Adam steps on the pixels minimising the released model's
    cross-entropy for ``labels (N,)`` plus ``p.refine_tv`` · total variation, clipped to [0, 1]. On a model that
    encodes its members closely (a softmax regression fit to one image per class) this recovers them; the
    generator alone finds only images the model accepts."""
    if p.refine_steps == 0:
        return images
    x = images.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=p.refine_lr)
    for _ in range(p.refine_steps):
        shown = x.clamp(0, 1)
        loss = F.cross_entropy(model(shown), labels) + p.refine_tv * total_variation(shown).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return x.detach().clamp(0, 1)


@ATTACKS.register("gan-attack")
class GANAttack(Attack):
    """GAN attack (Hitaj et al., CCS 2017): a generator steered by the released classifier recovers class prototypes."""

    threat = ThreatModel.MODEL_HOLDER
    requires = frozenset({Surface.MODEL})
    positive_controls = {"class-exemplar": 0.15}
    access = Access.WHITE_BOX

    @dataclass(frozen=True)
    class Params:
        per_class: int = 4
        steps: int = 200
        batch_size: int = 64
        z_dim: int = 32
        lr: float = 2e-3
        w_adv: float = 1.0
        tv: float = 0.2
        refine_steps: int = 300
        refine_tv: float = 0.1
        refine_lr: float = 0.05

        def __post_init__(self) -> None:
            if min(self.per_class, self.steps, self.batch_size, self.z_dim) < 1 or not self.lr > 0:
                raise InputError("per_class, steps, batch_size, z_dim must be >= 1 and lr > 0")
            if self.w_adv < 0 or self.tv < 0 or self.refine_tv < 0 or self.refine_steps < 0:
                raise InputError("w_adv, tv, refine_tv and refine_steps must be >= 0")
            if not self.refine_lr > 0:
                raise InputError("refine_lr must be > 0")

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        """``per_class`` prototypes per class ``(K·per_class, C, H, W)`` in [0, 1] with their ``class_labels``;
        ``extra["target_agreement"]``: the share the released model classifies as their attacked class."""
        p, dev, k = self.params, ctx.device, view.num_classes
        model = view.release.model
        assert model is not None
        model = model.to(dev).eval().requires_grad_(False)
        g = ctx.generator(salt=131)
        gen = train_generator(model, view.aux, k, p, g, dev)
        labels = torch.arange(k).repeat_interleave(p.per_class)
        with torch.no_grad():
            images = gen(torch.randn(len(labels), p.z_dim, generator=g).to(dev), labels.to(dev))
        images = refine(model, images, labels.to(dev), p).cpu()
        with torch.no_grad():
            hit = float((model(images.to(dev)).argmax(1).cpu() == labels).float().mean())
        model.cpu()
        return AttackOutput(reconstructions=images, class_labels=labels, extra={"target_agreement": hit})
