"""ScatterNet + linear (Tramèr & Boneh, "Differentially Private Learning Needs Better Features", ICLR 2021): a fixed
scattering transform (Oyallon & Mallat 2015; kymatio's implementation, J = 2, L = 8 angles: 81 channels per input
channel at 1/4 resolution, 81×7×7 on 28×28) followed by a normalisation without parameters and one linear layer.
The transform is data-independent, so it costs no privacy and DP-SGD trains only the linear layer on features
computed once (:class:`privbench.models.nets.FixedFeatures`)."""

from __future__ import annotations

from torch import Tensor, nn

from privbench.core.errors import InputError
from privbench.core.registry import MODELS
from privbench.models.nets import FixedFeatures, SplitModel


def _scattering(shape: tuple[int, int], J: int) -> nn.Module:
    """kymatio's torch Scattering2D. Imported from its 2-D frontend directly: ``kymatio.torch`` also imports the 3-D
    transform, which needs ``scipy.special.sph_harm`` (removed in SciPy 1.17)."""
    try:
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D
    except ImportError as e:  # pragma: no cover - kymatio is a dependency
        raise InputError(f"the scatternet model needs kymatio ({e}); pip install kymatio") from None
    return ScatteringTorch2D(J=J, shape=shape, L=8)


class Scattering(FixedFeatures):
    """``(N, C, H, W)`` in [0, 1] → scattering coefficients ``(N, 81·C, H/4, W/4)`` (J = 2, L = 8), computed at the
    input's size (the filters are rebuilt for a new size; they are buffers, not parameters)."""

    def __init__(self, J: int = 2) -> None:
        super().__init__()
        self.J = J
        self._filters: dict[tuple[int, int], nn.Module] = {}

    def _transform(self, shape: tuple[int, int]) -> nn.Module:
        if shape not in self._filters:
            if min(shape) < 2 ** self.J * 4:
                raise InputError(f"scatternet: images of {shape[0]}×{shape[1]} are too small for J = {self.J}")
            self._filters[shape] = _scattering(shape, self.J)
        return self._filters[shape]

    def forward(self, x: Tensor) -> Tensor:
        s = self._transform((x.shape[-2], x.shape[-1])).to(x.device)
        out = s(x.contiguous())  # (N, C, 81, H/4, W/4)
        return out.flatten(1, 2)


@MODELS.register("scatternet")
def scatternet(in_channels: int, num_classes: int, width: int = 27) -> SplitModel:
    """ScatterNet + linear: :class:`Scattering`, GroupNorm without affine parameters over ``width`` groups of the
    81·C channels (Tramèr & Boneh's normalisation, 27 groups), and a linear classifier on the flattened features
    (39,700 parameters on 28×28 grayscale, 10 classes). ``width`` must divide 81·C. Other image sizes than 28×28 are
    average-pooled to 7×7 after the transform (**privbench addition**)."""
    channels = 81 * in_channels
    if channels % width:
        raise InputError(f"scatternet: width (GroupNorm groups) {width} does not divide {channels} channels")
    return SplitModel([
        ("scattering", Scattering()),
        ("norm", nn.Sequential(nn.GroupNorm(width, channels, affine=False), nn.AdaptiveAvgPool2d(7), nn.Flatten())),
        ("classifier", nn.Linear(channels * 49, num_classes)),
    ])
