"""dlib's ResNet-29 face-recognition network as a DLDL backbone, and a reader for its ``.dat`` file.

dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (Davis King, public domain; in the PyPI sdist
``face-recognition-models==0.3.0``) maps a 150x150 aligned face to a 128-D descriptor. It was
trained on about 3M faces, so its features already encode identity, and with it age cues: the
face-recognition pre-training of the DLDL-v2 paper, had offline. Its layout (dlib's ``anet_type``):

- stem: conv 7x7/2 (32) -> affine -> ReLU -> max-pool 3x3/2;
- 14 residual blocks ``conv3x3 -> affine -> ReLU -> conv3x3 -> affine, + shortcut, ReLU``: 3 of
  32 channels, then 4 of 64, 3 of 128, 3 of 256 and 1 of 256; the first block of each stage after
  the first halves the side (its first conv has stride 2, its shortcut is a 2x2/2 average pool);
- global average pooling (256) and, in the face-recognition net, a bias-free 128-way Linear.

So 29 convolutions. dlib's "affine" layer is a per-channel scale and shift (its BatchNorm folded
after training); :class:`Affine` keeps it so, so the loaded network computes exactly dlib's
function. dlib pads only stride-1 convolutions and pools (by half the window); stride-2 ones are
unpadded, so sides shrink a little faster than halving and inputs below about 104 px fail. Where
a block's two branches differ (more channels, one row more), dlib's ``add_prev`` sums them as if
the smaller were zero-padded at the end, and so does :func:`add_padded`.

Here the descriptor Linear is replaced by the DLDL ``head`` on the pooled 256 features (dropout
before it, as for the MobileNets). Inputs are what ``dldl.data.augment`` produces (ImageNet
mean/std normalisation); they are converted to dlib's ``(pixel - channel mean) / 256``.

The ``.dat`` format is dlib's own serialisation; :func:`read_dlib_dat` reads the parameter tensors
of the ``con_``, ``affine_`` and ``fc_`` layers in file order (input to output) and checks every
shape against this layout, so a file of another network is refused rather than misread.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dldl.data.preprocess import MEAN, STD
from dldl.errors import CheckpointError
from dldl.models.registry import register_model
from dldl.models.vgg import check_input

# (channels, blocks, first block halves the side) per stage, input to output
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
STEM = 32
FEATURES = 256
DESCRIPTOR = 128
# dlib's input_rgb_image: per-channel means subtracted (R, G, B), then divided by 256
DLIB_MEAN = (122.782, 117.001, 104.298)
DLIB_SCALE = 256.0


class Affine(nn.Module):
    """Per-channel ``y = weight * x + bias`` on ``(N, C, H, W)`` (dlib's affine layer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def dlib_conv(cin: int, cout: int, k: int, stride: int) -> nn.Conv2d:
    """dlib's ``con`` layer: with bias, padded by ``k // 2`` only when the stride is 1."""
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0, bias=True)


def add_padded(a: Tensor, b: Tensor) -> Tensor:
    """Sum ``(N, C1, H1, W1)`` and ``(N, C2, H2, W2)`` as dlib's ``add_prev`` does: each is
    zero-padded at the end of every dimension to the larger size.

    >>> add_padded(torch.ones(1, 2, 3, 3), torch.ones(1, 1, 2, 3)).sum().item()
    24.0
    """
    if a.dim() != 4 or b.dim() != 4 or a.shape[0] != b.shape[0]:
        raise ValueError(f"expected two (N, C, H, W) tensors with the same N, got {tuple(a.shape)} and {tuple(b.shape)}")
    size = [max(s, t) for s, t in zip(a.shape[1:], b.shape[1:])]

    def pad(x: Tensor) -> Tensor:
        c, h, w = (s - t for s, t in zip(size, x.shape[1:]))
        return F.pad(x, (0, w, 0, h, 0, c)) if c or h or w else x

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """``(N, cin, H, W) -> (N, cout, H', W')``: conv3x3/s -> affine -> ReLU -> conv3x3 -> affine,
    plus the input (2x2/2 average-pooled when ``down``), then ReLU."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.conv1 = dlib_conv(cin, cout, 3, 2 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = dlib_conv(cout, cout, 3, 1)
        self.affine2 = Affine(cout)
        self.shortcut = nn.AvgPool2d(2, 2) if down else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_padded(y, self.shortcut(x)))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet-29 with a DLDL ``head``.

    Input ``(N, 3, H, W)`` normalised with the ImageNet mean/std (``dldl.data.augment``), H and W
    multiples of 32 and at least 128; output ``(N, num_outputs)`` logits.

    >>> DlibResNet(num_outputs=101)(torch.zeros(2, 3, 128, 128)).shape
    torch.Size([2, 101])
    """

    def __init__(self, num_outputs: int = 101, drop_rate: float = 0.2) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        self.stem = nn.Sequential(dlib_conv(3, STEM, 7, 2), Affine(STEM), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        blocks, channels = [], STEM
        for cout, n, down in STAGES:
            for i in range(n):
                blocks.append(ResidualBlock(channels, cout, down and i == 0))
                channels = cout
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(FEATURES, num_outputs)
        # pipeline input x = (p - MEAN) / STD for pixels p in [0, 1]; dlib wants (255 p - mean) / 256
        scale = [255 * s / DLIB_SCALE for s in STD]
        shift = [(255 * m - d) / DLIB_SCALE for m, d in zip(MEAN, DLIB_MEAN)]
        self.register_buffer("in_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    def features(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W)`` pipeline-normalised -> ``(N, 256)`` pooled features."""
        check_input(x)
        if x.shape[2] < 128 or x.shape[3] < 128:
            raise ValueError(f"dlib_resnet29 needs inputs of at least 128 px (its stride-2 convolutions are unpadded), got {tuple(x.shape[2:])}")
        x = torch.addcmul(self.in_shift.to(x.dtype), x, self.in_scale.to(x.dtype))
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


@register_model
def dlib_resnet29(num_outputs: int = 101, drop_rate: float = 0.2) -> DlibResNet:
    """dlib's face-recognition ResNet-29 (5.6M parameters in dlib's net; 5,607,781 with a
    101-way head), initialised from its face-recognition weights with
    ``backbone_weights=face_recognition``."""
    return DlibResNet(num_outputs, drop_rate)


dlib_resnet29.min_input_size = 128  # checked by dldl.training before any data is read


# ---- the .dat reader ------------------------------------------------------------------------------

class _Reader:
    """dlib's serialisation primitives over a byte string."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(self.path, f"is not dlib's face-recognition ResNet ({what} at byte {self.pos})")

    def int(self) -> int:
        """dlib's packed integer: a byte with the length (low 4 bits) and sign (0x80), then the
        little-endian bytes."""
        if self.pos >= len(self.data):
            raise self.fail("file ends early")
        head = self.data[self.pos]
        n = head & 0x0F
        if n > 8:
            raise self.fail("bad integer")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if head & 0x80 else value

    def tensor(self) -> Tensor:
        """A ``resizable_tensor``: version 2, four dimensions, then little-endian float32s."""
        if self.int() != 2:
            raise self.fail("unknown tensor version")
        shape = [self.int() for _ in range(4)]
        count = shape[0] * shape[1] * shape[2] * shape[3]
        end = self.pos + 4 * count
        if count <= 0 or end > len(self.data):
            raise self.fail(f"bad tensor of shape {shape}")
        values = torch.frombuffer(bytearray(self.data[self.pos:end]), dtype=torch.float32)
        self.pos = end
        return values


def _layer_params(data: bytes, path: Path) -> list[tuple[str, Tensor, list[int]]]:
    """``(kind, flat params, extra ints)`` for every ``con_``/``affine_``/``fc_`` layer in file order."""
    r = _Reader(data, path)
    layers = []
    for kind, tag in (("con", b"\x05con_4"), ("affine", b"\x07affine_"), ("fc", b"\x04fc_2")):
        start = 0
        while (i := data.find(b"\x01" + tag, start)) >= 0:
            layers.append((i, kind))
            start = i + 1
    out = []
    for offset, kind in sorted(layers):
        r.pos = offset
        name_len = r.int()
        r.pos += name_len
        if kind == "fc":  # num_outputs, num_inputs, then the (inputs x outputs) weights
            outputs, inputs = r.int(), r.int()
            out.append((kind, r.tensor(), [outputs, inputs]))
        elif kind == "con":  # params (filters then biases), then filters, rows, cols, strides, paddings
            params = r.tensor()
            out.append((kind, params, [r.int() for _ in range(7)]))
        else:  # params: gamma then beta
            out.append((kind, r.tensor(), []))
    return out


def read_dlib_dat(path: str | Path) -> dict[str, Tensor]:
    """The parameters of ``dlib_face_recognition_resnet_model_v1.dat`` as a state dict of
    :class:`DlibResNet` (``stem``/``blocks``; the 128-D descriptor Linear as ``descriptor.weight``,
    ``(128, 256)``).

    Raises:
        CheckpointError (naming the file): missing, or not this network (a layer missing, or any
        shape, stride or padding not that of dlib's ResNet-29).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "dlib weight file not found")
    layers = _layer_params(p.read_bytes(), p)
    names = ["stem.0", "stem.1"]
    for b, (cout, n, down) in enumerate(_flat_blocks()):
        names += [f"blocks.{b}.conv1", f"blocks.{b}.affine1", f"blocks.{b}.conv2", f"blocks.{b}.affine2"]
    names.append("descriptor")
    kinds = ["con", "affine"] * (len(names) // 2) + ["fc"]
    if [k for k, _, _ in layers] != kinds:
        raise CheckpointError(p, f"is not dlib's face-recognition ResNet (found {len(layers)} conv/affine/fc layers, "
                                 f"expected {len(kinds)} in the order of ResNet-29)")
    template = DlibResNet(num_outputs=1).state_dict()
    state: dict[str, Tensor] = {}
    for name, (kind, flat, ints) in zip(names, layers):
        if kind == "con":
            w = template[f"{name}.weight"]
            filters, rows, cols, sy, sx, py, px = ints
            conv_stride = 2 if name == "stem.0" or (name.endswith("conv1") and _is_down(name)) else 1
            expected = (w.shape[0], w.shape[2], w.shape[3], conv_stride, conv_stride)
            pad = 0 if conv_stride == 2 else w.shape[2] // 2
            if (filters, rows, cols, sy, sx) != expected or (py, px) != (pad, pad) or flat.numel() != w.numel() + w.shape[0]:
                raise CheckpointError(p, f"layer {name}: conv {filters}x{rows}x{cols}/{sy} pad {py} does not fit "
                                         f"dlib's ResNet-29 ({expected[0]}x{expected[1]}x{expected[2]}/{conv_stride})")
            state[f"{name}.weight"] = flat[:w.numel()].view(w.shape).clone()
            state[f"{name}.bias"] = flat[w.numel():].clone()
        elif kind == "affine":
            c = template[f"{name}.weight"].numel()
            if flat.numel() != 2 * c:
                raise CheckpointError(p, f"layer {name}: affine of {flat.numel() // 2} channels, expected {c}")
            state[f"{name}.weight"], state[f"{name}.bias"] = flat[:c].clone(), flat[c:].clone()
        else:
            outputs, inputs = ints
            if (outputs, inputs) != (DESCRIPTOR, FEATURES) or flat.numel() != outputs * inputs:
                raise CheckpointError(p, f"descriptor layer {inputs}->{outputs}, expected {FEATURES}->{DESCRIPTOR}")
            state["descriptor.weight"] = flat.view(inputs, outputs).t().contiguous()
    return state


def _flat_blocks() -> list[tuple[int, int, bool]]:
    return [(cout, n, down and i == 0) for cout, n, down in STAGES for i in range(n)]


def _is_down(name: str) -> bool:
    return _flat_blocks()[int(name.split(".")[1])][2]
