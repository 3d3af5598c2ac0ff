"""dldl: facial age and attractiveness estimation by deep label-distribution learning (DLDL-v2).

One call gives every face in a photo: ``dldl.predict("party.jpg")`` (:func:`dldl.predictor.predict`);
``dldl.pipeline("age")`` gives the :class:`~dldl.predictor.Predictor` behind it. The layers of the
package and where each kind of change goes: ``docs/ARCHITECTURE.md``.

The names below are imported on first use, so ``import dldl.files`` (or the photo pipeline) does
not load the training stack.

>>> import dldl
>>> dldl.create_model("tiny_age_net").head.out_features
101
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "predict": ("dldl.predictor", "predict"),
    "pipeline": ("dldl.predictor", "pipeline"),
    "TASKS": ("dldl.predictor", "TASKS"),
    "load": ("dldl.hub", "load"),
    "list_pretrained": ("dldl.hub", "list_pretrained"),
    "LabelSet": ("dldl.labels", "LabelSet"),
    "create_model": ("dldl.models", "create_model"),
    "list_models": ("dldl.models", "list_models"),
}
"""The top-level API: name -> (module, attribute)."""


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dldl' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["LabelSet", "TASKS", "create_model", "list_models", "list_pretrained", "load", "pipeline", "predict",
           "__version__"]
