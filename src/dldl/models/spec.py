"""``ModelSpec``: the one record of what a trained model needs, in the spirit of timm's pretrained
config. It travels with the weights: ``.pt`` checkpoints (key ``"spec"``), ONNX metadata
(``metadata_props["dldl"]``), TorchScript extras (``dldl.json``) and model cards all store the
same ``spec.to_dict()``, and :class:`~dldl.runtime.Estimator` is built from it.

>>> spec = ModelSpec("tiny_age_net", LabelSet(0, 100, 1), input_size=64, model_kwargs={"hybrid_pool": True})
>>> spec.num_outputs, spec.cache_size
(101, 72)
>>> ModelSpec.from_dict(spec.to_dict()) == spec
True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from dldl.data.preprocess import EVAL_CROP, MEAN, STD, cache_size_for
from dldl.errors import CheckpointError, first_line
from dldl.labels import LabelSet
from dldl.losses import OBJECTIVES, get_objective

if TYPE_CHECKING:
    from torch import nn

SPEC_VERSION = 1
TASKS = ("age", "beauty")
MAX_INPUT_SIZE, MAX_CACHE_SIZE, MAX_LABELS = 1024, 2048, 10_000  # bounds on what a model file may ask for


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a trained network and turn its outputs into estimates.

    Attributes:
        architecture: a :func:`~dldl.models.create_model` name.
        labels: the label set the outputs refer to.
        objective: the loss / read-out (``dldl_v2``, ``ranking``, ...; :mod:`dldl.losses`).
        input_size: the network's input side.
        task: ``"age"`` or ``"beauty"``.
        template: the alignment template of the crops the model was trained on; photos are
            aligned to it (:data:`dldl.faces.TEMPLATES`).
        model_kwargs: the architecture's own options (``{"hybrid_pool": True}`` for the VGG family).
        cache_size: the stored crop side the eval centre crop (``eval_crop``) is taken from.
        eval_crop: the eval centre crop as a fraction of the stored crop.
        mean, std: the input normalisation (per channel, of pixels in ``[0, 1]``).
        temperature: logits are divided by it before the softmax (1: none; set by calibration).
        label_range: ``(low, high)`` of the training labels (e.g. ages 21-60), or ``None`` if unknown.
        tta_flip: whether photos are predicted with flip test-time augmentation (the crop and its
            mirror image averaged) unless the caller says otherwise; off for a model whose doubled
            cost breaks the speed budget (a test-time setting, like timm's ``crop_pct``).
    """

    architecture: str
    labels: LabelSet
    objective: str = "dldl_v2"
    input_size: int = 64
    task: str = "age"
    template: str = "utkface"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    cache_size: int | None = None
    eval_crop: float = EVAL_CROP
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    temperature: float = 1.0
    label_range: tuple[float, float] | None = None
    tta_flip: bool = True

    def __post_init__(self) -> None:
        if self.cache_size is None:
            object.__setattr__(self, "cache_size", cache_size_for(self.input_size))
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.label_range is not None:
            object.__setattr__(self, "label_range", tuple(float(v) for v in self.label_range))
        self._check()

    def _check(self) -> None:
        """Every field a known value within bounds: a spec read from a file is never trusted
        (a huge ``cache_size`` would allocate gigabytes, a ``task`` goes into file names)."""
        from dldl.faces.align import TEMPLATES

        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"{name} {getattr(self, name)!r}: must be {allowed}")

        need(isinstance(self.architecture, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,39}", self.architecture) is not None,
             "architecture", "a model name (lower-case letters, digits, _)")
        need(self.objective in OBJECTIVES, "objective", f"one of {', '.join(OBJECTIVES)}")
        need(self.task in TASKS, "task", f"one of {', '.join(TASKS)}")
        need(self.template in TEMPLATES, "template", f"one of {', '.join(TEMPLATES)}")
        need(_whole(self.input_size) and 16 <= self.input_size <= MAX_INPUT_SIZE, "input_size",
             f"a whole number in [16, {MAX_INPUT_SIZE}]")
        need(_whole(self.cache_size) and self.input_size <= self.cache_size <= MAX_CACHE_SIZE, "cache_size",
             f"a whole number in [input_size, {MAX_CACHE_SIZE}]")
        need(isinstance(self.eval_crop, (int, float)) and 0 < self.eval_crop <= 1, "eval_crop", "in (0, 1]")
        need(self.labels.num_labels <= MAX_LABELS, "labels", f"at most {MAX_LABELS:,} labels")
        need(len(self.mean) == 3 and all(math.isfinite(v) for v in self.mean), "mean", "3 finite numbers")
        need(len(self.std) == 3 and all(math.isfinite(v) and v > 0 for v in self.std), "std", "3 finite numbers > 0")
        need(isinstance(self.temperature, (int, float)) and 0.01 <= self.temperature <= 100, "temperature", "in [0.01, 100]")
        need(self.label_range is None or (len(self.label_range) == 2 and all(math.isfinite(v) for v in self.label_range)
                                          and self.label_range[0] <= self.label_range[1]), "label_range", "(low, high) or None")
        need(isinstance(self.tta_flip, bool), "tta_flip", "true or false")
        need(all(isinstance(k, str) and isinstance(v, (bool, int, float, str)) for k, v in self.model_kwargs.items()),
             "model_kwargs", "names to plain values")

    @property
    def num_outputs(self) -> int:
        """Width of the network's head for this objective and label set."""
        return get_objective(self.objective).num_outputs(self.labels)

    def create_model(self) -> nn.Module:
        """A freshly initialised network of this spec (load the weights into it)."""
        from dldl.models.registry import create_model  # torch: only where a network is built

        return create_model(self.architecture, num_outputs=self.num_outputs, **self.model_kwargs)

    def replace(self, **changes: Any) -> "ModelSpec":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``from_dict`` reads it back)."""
        out: dict[str, Any] = {"version": SPEC_VERSION}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, LabelSet) else list(v) if isinstance(v, tuple) else v
        out["num_outputs"] = self.num_outputs
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSpec":
        """The spec stored by :meth:`to_dict`. Raises ``ValueError`` naming what is wrong."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a model spec is a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        missing = {"architecture", "labels"} - set(d)
        if missing:
            raise ValueError(f"model spec lacks {', '.join(sorted(missing))}")
        kw = {k: v for k, v in d.items() if k in known}
        kw["labels"] = LabelSet(**d["labels"]) if isinstance(d["labels"], Mapping) else LabelSet.parse(str(d["labels"]))
        spec = cls(**kw)
        if "num_outputs" in d and int(d["num_outputs"]) != spec.num_outputs:
            raise ValueError(f"objective {spec.objective!r} on {spec.labels.num_labels} labels needs {spec.num_outputs} "
                             f"outputs, the spec says {d['num_outputs']}")
        return spec

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], path: object = None) -> "ModelSpec":
        """The spec of a checkpoint / export payload: its ``"spec"`` entry, or the fields that files
        written before ``ModelSpec`` existed kept at the top level (their alignment template then
        follows the task: MEBeauty's for beauty models, UTKFace's for age models, as it did).

        Raises:
            CheckpointError: naming ``path``, when the payload holds no usable spec.
        """
        try:
            if "spec" in payload:
                return cls.from_dict(payload["spec"])
            task = payload.get("task", "age")
            model = payload.get("model") or {"name": "unknown"}  # old exports stored no architecture (the graph is the model)
            kwargs = {"hybrid_pool": bool(model["hybrid_pool"])} if "hybrid_pool" in model and model["name"] not in (
                "mobilenet_v2", "efficientnet_lite0") else {}
            old = {"architecture": model["name"], "labels": payload["labels"], "objective": payload["loss"],
                   "input_size": int(payload["input_size"]), "cache_size": int(payload["cache_size"]), "task": task,
                   "template": "mebeauty" if task == "beauty" else "utkface", "model_kwargs": kwargs}
            if "num_outputs" in model:
                old["num_outputs"] = int(model["num_outputs"])
            return cls.from_dict(old)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(path, f"does not hold a usable dldl model spec ({first_line(e)})") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
