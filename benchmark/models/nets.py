"""LeNet, ConvNet and ResNet-8/20 as sequences of named stages, so any stage boundary is a split point."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from privbench.core.errors import InputError
from privbench.core.registry import MODELS


class FixedFeatures(nn.Module):
    """A stage without trainable parameters and without randomness (e.g. a scattering transform): its output on a
    training set can be computed once, and per-sample gradients need only the stages after it
    (:meth:`SplitModel.fixed_split`). Subclasses must not register parameters."""


class SplitModel(nn.Module):
    """A classifier made of named stages run in order.

    ``forward(x)``: ``x (N,C,H,W)`` in [0,1] -> logits ``(N, num_classes)``. ``head(point)`` / ``tail(point)``
    give the parts before and after split point ``point`` (a stage name) for split-DNN defenses.
    """

    def __init__(self, stages: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(stages)

    @property
    def split_points(self) -> list[str]:
        return list(self.stages)[:-1]

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages.values():
            x = stage(x)
        return x

    def fixed_split(self) -> tuple[nn.Sequential, nn.Sequential] | None:
        """``(fixed, rest)``: the leading :class:`FixedFeatures` stages and the stages after them (sharing this model's
        modules, so ``rest``'s parameters are all of the model's, in order), or ``None`` if the model has none.
        Training ``rest`` on ``fixed(x)`` computed once equals training the model on ``x`` (ScatterNet features)."""
        stages = list(self.stages.values())
        k = 0
        while k < len(stages) - 1 and isinstance(stages[k], FixedFeatures):
            if any(True for _ in stages[k].parameters()):
                raise InputError(f"{type(stages[k]).__name__} is a FixedFeatures stage but has parameters: a fixed "
                                 "stage must be data-independent (its output is computed once, outside DP)")
            k += 1
        return (nn.Sequential(*stages[:k]), nn.Sequential(*stages[k:])) if k else None

    def _check_point(self, point: str) -> int:
        names = list(self.stages)
        if point not in names[:-1]:
            raise InputError(f"split point {point!r} does not exist; available: {', '.join(names[:-1])}")
        return names.index(point)

    def head(self, point: str) -> nn.Sequential:
        """Stages up to and including ``point``."""
        i = self._check_point(point)
        return nn.Sequential(*list(self.stages.values())[: i + 1])

    def tail(self, point: str) -> nn.Sequential:
        """Stages after ``point``."""
        i = self._check_point(point)
        return nn.Sequential(*list(self.stages.values())[i + 1:])


ModelFn = Callable[..., SplitModel]


def _conv_bn(cin: int, cout: int, stride: int = 1, bn: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


@MODELS.register("lenet")
def lenet(in_channels: int, num_classes: int, width: int = 6, bn: bool = False) -> SplitModel:
    """LeNet-5 style (LeCun et al. 1998) with sigmoid-free ReLU; ``width`` = first conv channels."""
    w1, w2 = width, width * 8 // 3
    return SplitModel([
        ("conv1", nn.Sequential(nn.Conv2d(in_channels, w1, 5, padding=2), *( [nn.BatchNorm2d(w1)] if bn else []),
                                nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True))),
        ("conv2", nn.Sequential(nn.Conv2d(w1, w2, 5, padding=2), *([nn.BatchNorm2d(w2)] if bn else []),
                                nn.ReLU(), nn.AdaptiveAvgPool2d(4))),
        ("fc", nn.Sequential(nn.Flatten(), nn.Linear(w2 * 16, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())),
        ("classifier", nn.Linear(84, num_classes)),
    ])


@MODELS.register("lenet-dlg")
def lenet_dlg(in_channels: int, num_classes: int, width: int = 12) -> SplitModel:
    """The LeNet of DLG (Zhu et al., NeurIPS 2019): four 5×5 sigmoid convolutions (strides 2, 2, 1, 1), no pooling,
    one linear layer; the standard model of gradient-inversion papers. An adaptive average pool to 7×7 before the
    linear layer (**privbench addition**) lets it take any input of at least 28×28. Weights and biases are drawn
    from U(-0.5, 0.5) as in the DLG reference code."""
    w = width

    def conv(cin: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, w, 5, stride, 2), nn.Sigmoid())

    model = SplitModel([
        ("conv1", conv(in_channels, 2)),
        ("conv2", conv(w, 2)),
        ("conv3", nn.Sequential(conv(w, 1), conv(w, 1))),
        ("classifier", nn.Sequential(nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(w * 49, num_classes))),
    ])
    for p in model.parameters():
        nn.init.uniform_(p, -0.5, 0.5)
    return model


@MODELS.register("convnet")
def convnet(in_channels: int, num_classes: int, width: int = 32, bn: bool = True) -> SplitModel:
    """A small VGG-style ConvNet: three conv blocks (``width``, 2×, 4× channels), global pooling, linear."""
    w = width
    return SplitModel([
        ("block1", nn.Sequential(*_conv_bn(in_channels, w, bn=bn), nn.MaxPool2d(2, ceil_mode=True))),
        ("block2", nn.Sequential(*_conv_bn(w, 2 * w, bn=bn), nn.MaxPool2d(2, ceil_mode=True))),
        ("block3", nn.Sequential(*_conv_bn(2 * w, 4 * w, bn=bn), nn.AdaptiveAvgPool2d(1), nn.Flatten())),
        ("classifier", nn.Linear(4 * w, num_classes)),
    ])


@MODELS.register("tanh-cnn")
def tanh_cnn(in_channels: int, num_classes: int, width: int = 16) -> SplitModel:
    """The DP-SGD CNN of Papernot et al. (AAAI 2021, tempered sigmoids) as Tramèr & Boneh (ICLR 2021) train it on
    MNIST and Fashion-MNIST: conv ``width`` 8×8 stride 2 pad 2, max-pool 2 stride 1, conv ``2·width`` 4×4 stride 2,
    max-pool 2 stride 1, linear 32, linear; tanh activations, no normalisation (26,010 parameters at width 16 on
    28×28). Input ``(N, C, 28, 28)``; other sizes go through an adaptive pool to 4×4 (**privbench addition**)."""
    w = width
    return SplitModel([
        ("conv1", nn.Sequential(nn.Conv2d(in_channels, w, 8, 2, 2), nn.Tanh(), nn.MaxPool2d(2, 1))),
        ("conv2", nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 0), nn.Tanh(), nn.MaxPool2d(2, 1),
                                nn.AdaptiveAvgPool2d(4), nn.Flatten())),
        ("fc", nn.Sequential(nn.Linear(2 * w * 16, 32), nn.Tanh())),
        ("classifier", nn.Linear(32, num_classes)),
    ])


class Motion(nn.Module):
    """Clips ``(N, T, C, H, W)`` -> ``(N, T*C, H, W)``: each clip minus its mean frame, frames stacked as channels.

    Removing the mean frame keeps what moves and drops static appearance and background, which otherwise dominate
    a small model's features (docs/METHODS.md, synthetic-actions)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise InputError(f"clipnet expects clips (N, T, C, H, W), got {tuple(x.shape)}")
        return (x - x.mean(1, keepdim=True)).flatten(1, 2)


@MODELS.register("clipnet")
def clipnet(in_channels: int, num_classes: int, width: int = 32, bn: bool = True) -> SplitModel:
    """An early-fusion 2-D CNN for action recognition (Karpathy et al., CVPR 2014, early fusion) on motion input
    (:class:`Motion`); ``in_channels`` = frames × colour channels. Same blocks as :func:`convnet`."""
    body = convnet(in_channels, num_classes, width, bn)
    return SplitModel([("motion", Motion()), *body.stages.items()])


class BasicBlock(nn.Module):
    """ResNet basic block (He et al., CVPR 2016) with an optional projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.short(x))


def _resnet(depth: int, in_channels: int, num_classes: int, width: int) -> SplitModel:
    n = (depth - 2) // 6
    w = width
    stages: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(*_conv_bn(in_channels, w)))]
    cin = w
    for i, (cout, stride) in enumerate([(w, 1), (2 * w, 2), (4 * w, 2)], start=1):
        blocks = [BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)]
        stages.append((f"layer{i}", nn.Sequential(*blocks)))
        cin = cout
    stages.append(("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())))
    stages.append(("classifier", nn.Linear(cin, num_classes)))
    return SplitModel(stages)


@MODELS.register("resnet8")
def resnet8(in_channels: int, num_classes: int, width: int = 16) -> SplitModel:
    """CIFAR-style ResNet-8 (one block per stage), widths ``width``, 2×, 4×."""
    return _resnet(8, in_channels, num_classes, width)


@MODELS.register("resnet20")
def resnet20(in_channels: int, num_classes: int, width: int = 16) -> SplitModel:
    """CIFAR-style ResNet-20 (three blocks per stage), widths ``width``, 2×, 4×."""
    return _resnet(20, in_channels, num_classes, width)


def input_channels(sample_shape: tuple[int, ...]) -> int:
    """Input channels of a task model for samples of ``sample_shape``: ``C`` for images ``(C, H, W)``, frames ×
    channels ``T*C`` for clips ``(T, C, H, W)`` (early fusion)."""
    c = 1
    for d in sample_shape[:-2]:
        c *= int(d)
    return c


def build_model(name: str, in_channels: int, num_classes: int, **kwargs: object) -> SplitModel:
    return MODELS.get(name)(in_channels, num_classes, **kwargs)
