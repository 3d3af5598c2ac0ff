"""Inverted-residual backbones that start from ImageNet weights: MobileNetV2 (width 1.0) and
EfficientNet-Lite0, under the same DLDL-v2 head as the VGG-shaped networks.

Both are a stem conv3x3/2, a stack of inverted-residual blocks (1x1 expansion, depthwise kxk,
1x1 linear projection, residual when the shape is kept; Sandler et al. 2018) and a conv1x1 to 1280
channels, all with BatchNorm + ReLU6; then global average pooling, dropout and a Linear head that
outputs ``num_outputs`` logits. EfficientNet-Lite0 (Tan & Le 2019, the "lite" edge variant: no
squeeze-excitation, ReLU6, fixed stem and head) is the same network with other kernel sizes and
stage depths, so one class builds both.

Module and parameter names are torchvision's (``features.{i}...``), so torchvision's
``mobilenet_v2-b0353104.pth`` loads with exact key matching (``dldl.models.backbone_weights``); the
EfficientNet-Lite0 file, in EfficientNet-PyTorch's names, is renamed on loading.

Inputs are what ``dldl.data.augment`` produces: ``(N, 3, H, W)`` normalised with the ImageNet
mean/std, H and W multiples of 32. That is MobileNetV2's own normalisation. The EfficientNet-Lite
weights were trained on ``(pixel - 127) / 128`` (TensorFlow's edge-model preprocessing), so that
model converts its input internally, and it pads its stride-2 convolutions like TensorFlow's
``SAME`` (one row/column more after than before), which the weights were trained with.

``hybrid_pool`` is accepted so that every registered model takes the same arguments, and ignored:
these backbones end in plain global average pooling (the DLDL-v2 hybrid pooling, a max-pool before
the average, belongs to the VGG networks, whose last feature map is 2x larger).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dldl.data.preprocess import MEAN, STD
from dldl.models.registry import register_model
from dldl.models.vgg import check_input

# (expansion, out channels, blocks, first stride, kernel) per stage
MOBILENET_V2 = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 32, 3, 2, 3), (6, 64, 4, 2, 3),
                (6, 96, 3, 1, 3), (6, 160, 3, 2, 3), (6, 320, 1, 1, 3))
EFFICIENTNET_LITE0 = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                      (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))
STEM, LAST = 32, 1280


class TFSameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``SAME`` padding for inputs whose side is a multiple of the
    stride: ``k - s`` pixels in all, ``(k - s) // 2`` before and the rest after."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        total = max(self.kernel_size[0] - self.stride[0], 0)
        self.pads = (total // 2, total - total // 2) * 2  # (left, right, top, bottom)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.pads))


def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, tf_same: bool = False) -> nn.Conv2d:
    """A bias-free ``k x k`` convolution padded to keep ``side / stride`` (symmetric or TF ``SAME``)."""
    if tf_same:
        return TFSameConv2d(cin, cout, k, stride, padding=0, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2, groups=groups, bias=False)


def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, tf_same: bool = False,
                eps: float = 1e-5) -> nn.Sequential:
    """conv + BatchNorm + ReLU6, named ``0``, ``1``, ``2`` as torchvision's ``Conv2dNormActivation``."""
    return nn.Sequential(conv(cin, cout, k, stride, groups, tf_same), nn.BatchNorm2d(cout, eps=eps), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """``(N, cin, H, W) -> (N, cout, H / stride, W / stride)``: [1x1 expand] -> depthwise kxk ->
    1x1 project (linear), plus the input when the shape is kept. ``self.conv`` is named as in torchvision."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, k: int, tf_same: bool, eps: float) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [conv_bn_act(cin, hidden, 1, eps=eps)] if expand != 1 else []
        layers += [conv_bn_act(hidden, hidden, k, stride, hidden, tf_same, eps), conv(hidden, cout, 1), nn.BatchNorm2d(cout, eps=eps)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNet(nn.Module):
    """Stem + inverted-residual stages + conv1x1 to 1280 (``features``), GAP, dropout, Linear ``head``.

    Input ``(N, 3, H, W)`` normalised with the ImageNet mean/std, H and W multiples of 32; output
    ``(N, num_outputs)`` logits.

    Args:
        stages: ``(expansion, channels, blocks, first stride, kernel)`` per stage.
        num_outputs: outputs of the head.
        drop_rate: dropout before the head (0.2 as both networks were trained on ImageNet).
        tf_same: pad stride-2 convolutions like TensorFlow's ``SAME`` (weights converted from TF).
        bn_eps: BatchNorm epsilon the weights were trained with.
        input_mean, input_std: the normalisation (of ``[0, 1]`` pixels) the weights expect; the
            input, normalised with ``dldl.data.augment.MEAN/STD``, is converted to it.

    >>> MobileNet(MOBILENET_V2, num_outputs=101)(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 101])
    """

    def __init__(self, stages: tuple[tuple[int, int, int, int, int], ...], num_outputs: int, drop_rate: float = 0.2,
                 tf_same: bool = False, bn_eps: float = 1e-5, input_mean: tuple[float, ...] = MEAN,
                 input_std: tuple[float, ...] = STD) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        layers: list[nn.Module] = [conv_bn_act(3, STEM, 3, 2, tf_same=tf_same, eps=bn_eps)]
        channels = STEM
        for expand, cout, blocks, stride, k in stages:
            for i in range(blocks):
                layers.append(InvertedResidual(channels, cout, stride if i == 0 else 1, expand, k, tf_same, bn_eps))
                channels = cout
        layers.append(conv_bn_act(channels, LAST, 1, eps=bn_eps))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(LAST, num_outputs)
        # x_expected = x * scale + shift maps the pipeline's normalisation to the weights' one
        scale = [s / t for s, t in zip(STD, input_std)]
        shift = [(m - n) / t for m, n, t in zip(MEAN, input_mean, input_std)]
        self.convert_input = (tuple(input_mean), tuple(input_std)) != (tuple(MEAN), tuple(STD))
        self.register_buffer("in_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation (for training from scratch; ImageNet weights replace it)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x)
        if self.convert_input:
            x = torch.addcmul(self.in_shift.to(x.dtype), x, self.in_scale.to(x.dtype))
        return self.head(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


@register_model
def mobilenet_v2(num_outputs: int = 101, drop_rate: float = 0.2) -> MobileNet:
    """MobileNetV2, width 1.0, torchvision's layout: 2,353,253 parameters with 101 outputs
    (plain global average pooling)."""
    return MobileNet(MOBILENET_V2, num_outputs, drop_rate)


@register_model
def efficientnet_lite0(num_outputs: int = 101, drop_rate: float = 0.2) -> MobileNet:
    """EfficientNet-Lite0 (TF weights: ``SAME`` padding, BN eps 1e-3, inputs ``(pixel - 127) / 128``):
    3,500,389 parameters with 101 outputs (plain global average pooling)."""
    return MobileNet(EFFICIENTNET_LITE0, num_outputs, drop_rate, tf_same=True, bn_eps=1e-3,
                     input_mean=(127 / 255,) * 3, input_std=(128 / 255,) * 3)
