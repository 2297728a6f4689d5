"""GAN attack on a released classifier (after Hitaj, Ateniese & Pérez-Cruz, "Deep Models Under the GAN", CCS 2017).

Hitaj et al.'s adversary joins collaborative training and uses the shared model as the discriminator of a local
GAN, so that the generator learns class-representative images of a class it has no data of. privbench attacks a
*released* (frozen) model, so the shared model cannot be trained with a "fake" class; **assumption**: a class-
conditional generator ``G(z, c)`` is trained to make the frozen released model output class ``c`` (cross-entropy),
with a realism term from a small discriminator trained on the attacker's aux images of the *other* classes only
(as in Hitaj et al., the adversary has no data of the attacked class), and a TV prior. Outputs ``per_class`` images
per class, scored by the runner against the nearest private original of that class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.contracts import Access, Attack, AttackContext, AttackOutput, AttackView, Surface
from benchmark.threats import ThreatModel
from benchmark.errors import InputError
from benchmark.metrics.image import total_variation
from benchmark.seeding import seeded

from benchmark.registry import ATTACKS


class Generator(nn.Module):
    """``(z (N, z_dim), c (N,))`` -> images ``(N, C, H, W)`` in [0, 1] (two transposed-conv upsamplings)."""

    def __init__(self, z_dim: int, num_classes: int, shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        c, h, w = shape
        self.h0, self.w0, self.shape, self.width = -(-h // 4), -(-w // 4), shape, width
        self.embed = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Linear(z_dim, width * self.h0 * self.w0)
        self.net = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.ConvTranspose2d(width, width // 2, 4, 2, 1),
                                 nn.BatchNorm2d(width // 2), nn.ReLU(), nn.ConvTranspose2d(width // 2, c, 4, 2, 1))

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        h = self.fc(z * self.embed(c)).view(-1, self.width, self.h0, self.w0)
        x = self.net(h)[..., : self.shape[1], : self.shape[2]]
        return torch.sigmoid(x)


class Critic(nn.Module):
    """Real-vs-generated discriminator ``(N, C, H, W)`` -> logits ``(N,)``."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


@ATTACKS.register("gan-attack")
class GANAttack(Attack):
    """GAN attack (Hitaj et al., CCS 2017): a generator steered by the released classifier recovers class prototypes."""

    threat = ThreatModel.MODEL_HOLDER
    requires = frozenset({Surface.MODEL})
    access = Access.WHITE_BOX

    @dataclass(frozen=True)
    class Params:
        per_class: int = 4
        steps: int = 400
        batch_size: int = 64
        z_dim: int = 32
        lr: float = 2e-3
        w_adv: float = 0.5
        tv: float = 0.05

        def __post_init__(self) -> None:
            if min(self.per_class, self.steps, self.batch_size, self.z_dim) < 1 or not self.lr > 0:
                raise InputError("per_class, steps, batch_size, z_dim must be >= 1 and lr > 0")
            if self.w_adv < 0 or self.tv < 0:
                raise InputError("w_adv and tv must be >= 0")

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        p, dev, k = self.params, ctx.device, view.num_classes
        model = view.release.model
        assert model is not None
        model = model.to(dev).eval().requires_grad_(False)
        g = ctx.generator(salt=131)
        with seeded(g):
            gen = Generator(p.z_dim, k, tuple(view.image_shape)).to(dev)
            critic = Critic(view.image_shape[0]).to(dev)
        opt_g = torch.optim.Adam(gen.parameters(), lr=p.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(critic.parameters(), lr=p.lr, betas=(0.5, 0.999))
        aux_x, aux_y = view.aux.images, view.aux.labels
        for _ in range(p.steps):
            c = torch.randint(0, k, (p.batch_size,), generator=g)
            z = torch.randn(p.batch_size, p.z_dim, generator=g)
            fake = gen(z.to(dev), c.to(dev))
            # Real images for the critic: aux images of classes other than the one each fake is generated for.
            pick = torch.randint(0, len(aux_x), (4 * p.batch_size,), generator=g)
            real = aux_x[pick][aux_y[pick] != c.repeat(4)][: p.batch_size].to(dev)
            d_loss = (F.softplus(-critic(real)).mean() + F.softplus(critic(fake.detach())).mean())
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = (F.cross_entropy(model(fake), c.to(dev)) + p.w_adv * F.softplus(-critic(fake)).mean()
                      + p.tv * total_variation(fake).mean())
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        gen.eval()
        labels = torch.arange(k).repeat_interleave(p.per_class)
        with torch.no_grad():
            images = gen(torch.randn(len(labels), p.z_dim, generator=g).to(dev), labels.to(dev)).cpu()
            hit = float((model(images.to(dev)).argmax(1).cpu() == labels).float().mean())
        model.cpu()
        return AttackOutput(reconstructions=images, class_labels=labels, extra={"classifier_agreement": hit})
