"""A name -> constructor registry, as in timm: ``create_model("thin_age_net", num_labels=101)``."""

from __future__ import annotations

from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`.

    >>> list_models()[:2]
    ['thin_age_net', 'tiny_age_net']
    """
    return list(_MODELS)


def create_model(name: str, num_labels: int = 101, **kwargs) -> nn.Module:
    """Build a registered architecture with a ``num_labels``-way head (randomly initialised).

    >>> create_model("tiny_age_net", num_labels=41).head.out_features
    41
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(_MODELS)}")
    return _MODELS[name](num_labels=num_labels, **kwargs)
