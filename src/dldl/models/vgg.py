"""VGG16-D shaped networks of DLDL-v2: ThinAgeNet (width 1/2), TinyAgeNet (width 1/4) and the
full-width VGG16-BN baseline.

Each is 13 conv3x3 (no bias) + BatchNorm + ReLU layers in five stages separated by 2x2 max-pools,
then *hybrid pooling* (the fifth max-pool followed by global average pooling), then a Linear head
that outputs ``num_outputs`` logits (softmax is applied by the loss and at prediction). Weights are
initialised as in the reference (gaobb/DLDL-v2 models/hp_scratch.lua): conv ``N(0, sqrt(2/(3*3*out)))``,
BN weight 1 / bias 0, Linear bias 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dldl.models.registry import register_model

VGG16_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
STRIDE = 32


def scaled_config(width: float, last_stage: int | None = None) -> list[int | str]:
    """VGG16-D channel plan at a width multiplier; ``last_stage`` overrides stage 5's channels
    (the paper keeps it at stage 4's width: 256 for ThinAgeNet, 128 for TinyAgeNet).

    >>> scaled_config(0.5)[-4:]
    [256, 256, 256, 'M']
    """
    cfg: list[int | str] = ["M" if v == "M" else int(v * width) for v in VGG16_D]
    if last_stage is not None:
        cfg[-4:-1] = [last_stage] * 3
    return cfg


def check_input(x: Tensor) -> None:
    """Raise ValueError unless ``x`` is ``(N, 3, H, W)`` with H and W multiples of ``STRIDE``."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected input of shape (N, 3, H, W), got {tuple(x.shape)}")
    if x.shape[2] % STRIDE or x.shape[3] % STRIDE:
        raise ValueError(f"input height and width must be multiples of {STRIDE}, got {tuple(x.shape[2:])}")


class AgeNet(nn.Module):
    """A VGG-style feature extractor + hybrid pooling + Linear head.

    Input ``(N, 3, H, W)`` with H and W multiples of 32; output ``(N, num_outputs)`` logits.

    >>> net = AgeNet(scaled_config(0.25), num_outputs=101)
    >>> net(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 101])
    """

    def __init__(self, cfg: list[int | str], num_outputs: int, hybrid_pool: bool = True) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        layers: list[nn.Module] = []
        channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                channels = int(v)
        if not hybrid_pool:  # the paper's ablation: global average pooling straight after the last conv
            layers = layers[:-1]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_outputs)
        self.hybrid_pool = hybrid_pool
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x)
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


@register_model
def thin_age_net(num_outputs: int = 101, hybrid_pool: bool = True) -> AgeNet:
    """ThinAgeNet: VGG16-D at width 1/2 (stage 5 at 256), 3,708,229 parameters with 101 labels."""
    return AgeNet(scaled_config(0.5, last_stage=256), num_outputs, hybrid_pool)


@register_model
def tiny_age_net(num_outputs: int = 101, hybrid_pool: bool = True) -> AgeNet:
    """TinyAgeNet: VGG16-D at width 1/4 (stage 5 at 128), 934,869 parameters with 101 labels."""
    return AgeNet(scaled_config(0.25, last_stage=128), num_outputs, hybrid_pool)


@register_model
def vgg16_bn(num_outputs: int = 101, hybrid_pool: bool = True) -> AgeNet:
    """Full-width VGG16-D with BN and the same pooling/head: the speed baseline."""
    return AgeNet(scaled_config(1.0), num_outputs, hybrid_pool)
