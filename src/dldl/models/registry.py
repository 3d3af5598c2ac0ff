"""A name -> constructor registry, as in timm: ``create_model("thin_age_net", num_outputs=101)``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from dldl.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_MIN_INPUT_SIZE: dict[str, int] = {}
DEFAULT_MIN_INPUT_SIZE = 32  # five stride-2 stages
_ARCHITECTURES = ("vgg", "mobilenet", "dlib_resnet", "ensemble")  # the modules whose functions register themselves


def _registered() -> dict[str, Callable[..., nn.Module]]:
    """The registry, after importing the architecture modules (torch) on first use."""
    for module in _ARCHITECTURES:
        importlib.import_module(f"dldl.models.{module}")
    return _MODELS


def register_model(fn: Callable[..., nn.Module] | None = None, *, min_input_size: int = DEFAULT_MIN_INPUT_SIZE) -> Any:
    """Decorator: register ``fn`` under its function name (``@register_model``), or with the
    smallest input side the architecture takes (``@register_model(min_input_size=128)``)."""
    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _MODELS[fn.__name__] = fn
        _MIN_INPUT_SIZE[fn.__name__] = min_input_size
        return fn

    return register if fn is None else register(fn)


def min_input_size(name: str) -> int:
    """The smallest input side (pixels) architecture ``name`` takes.

    >>> min_input_size("tiny_age_net"), min_input_size("dlib_resnet29")
    (32, 128)
    """
    model_factory(name)  # a ConfigError naming the known models for an unknown one
    return _MIN_INPUT_SIZE[name]


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`.

    >>> list_models()[:2]
    ['thin_age_net', 'tiny_age_net']
    """
    return list(_registered())


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The registered constructor called ``name`` (its signature lists the architecture's options)."""
    models = _registered()
    if name not in models:
        raise ConfigError("model", name, f"one of {', '.join(models)}")
    return models[name]


def create_model(name: str, num_outputs: int = 101, **kwargs) -> nn.Module:
    """Build a registered architecture with a ``num_outputs``-way head (randomly initialised).

    ``num_outputs`` is what the objective needs (K labels for distribution losses, K-1 for
    ranking, 1 for regression: ``Objective.num_outputs``); ``kwargs`` are the architecture's own
    (``hybrid_pool`` for the VGG family, ``drop_rate`` for the MobileNets).

    >>> create_model("tiny_age_net", num_outputs=41).head.out_features
    41
    """
    import inspect

    factory = model_factory(name)
    allowed = set(inspect.signature(factory).parameters) - {"num_outputs"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"model {name!r} option(s)", unknown, f"among its own ({', '.join(sorted(allowed)) or 'none'})")
    return factory(num_outputs=num_outputs, **kwargs)
