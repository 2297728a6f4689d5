"""Example third-party defense for `privbench submit` (docs/SUBMITTING.md): box blur, then blend with noise."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from privbench.api import DEFENSES, InputDefense, InputError


@DEFENSES.register("noisy-blend")
class NoisyBlend(InputDefense):
    """Releases (1 - alpha) * boxblur(x) + alpha * u with fresh uniform noise u per pixel (images in [0, 1])."""

    strength = "alpha"

    @dataclass(frozen=True)
    class Params:
        alpha: float = 0.5  # share of noise, in [0, 1)
        kernel: int = 3  # box-blur size, odd

        def __post_init__(self) -> None:
            if not 0 <= self.alpha < 1 or self.kernel < 1 or self.kernel % 2 == 0:
                raise InputError(f"alpha must lie in [0, 1) and kernel be odd, got {self}")

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        k = self.params.kernel
        blurred = F.avg_pool2d(F.pad(images, [k // 2] * 4, mode="replicate"), k, stride=1)
        return (1 - self.params.alpha) * blurred + self.params.alpha * torch.rand(images.shape, generator=generator)
