"""Several trained networks as one model: the mean of their predicted label distributions.

An ensemble averages what its members predict (Lakshminarayanan et al., NeurIPS 2017), here the
label distributions, each at its member's own calibrated temperature. Its output is the log of that
mean, so the usual read-out (softmax, then the expectation) gives back the mean distribution, and
the estimate is the mean of the members' estimates (the expectation is linear). A temperature fitted
on the ensemble afterwards (``experiments/calibrate.py``) sharpens or widens the mixture. It is one
``nn.Module``, so it is saved, exported to ONNX and shipped like any other network.

>>> from dldl.labels import LabelSet
>>> from dldl.models.spec import ModelSpec
>>> spec = ModelSpec("ensemble", LabelSet(0, 10, 1), input_size=32, model_kwargs={"members": "tiny_age_net,tiny_age_net"})
>>> tuple(spec.create_model().eval()(torch.zeros(2, 3, 32, 32)).shape)
(2, 11)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dldl.errors import DldlError
from dldl.models.registry import create_model, register_model

SEPARATOR = ","


class MeanOfDistributions(nn.Module):
    """Members over one label set -> the log of their mean softmax distribution.

    Args:
        members: networks mapping ``(N, 3, S, S)`` normalised images to ``(N, K)`` logits.
        temperatures: each member's softmax temperature, ``(M,)`` (1: its raw logits).

    ``forward``: ``(N, 3, S, S)`` -> ``(N, K)`` log-probabilities, ``log(mean_m softmax(z_m / T_m))``.

    >>> net = MeanOfDistributions([nn.Flatten(), nn.Flatten()], [1.0, 0.5]).eval()
    >>> x = torch.tensor([[[[0.0]], [[1.0]]]])  # (1, 2, 1, 1): two logits per member
    >>> p = net(x).exp()
    >>> [round(v, 4) for v in p[0].tolist()]  # (softmax([0, 1]) + softmax([0, 2])) / 2
    [0.1941, 0.8059]
    >>> MeanOfDistributions([nn.Flatten()], [1.0, 2.0])
    Traceback (most recent call last):
    ...
    ValueError: temperatures must have one entry per member: 1 members, shape (2,)
    """

    def __init__(self, members: list[nn.Module], temperatures: list[float] | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        t = torch.ones(len(members)) if temperatures is None else torch.as_tensor(temperatures, dtype=torch.float32)
        if t.shape != (len(members),):
            raise ValueError(f"temperatures must have one entry per member: {len(members)} members, shape {tuple(t.shape)}")
        self.members = nn.ModuleList(members)
        self.register_buffer("temperatures", t)

    def forward(self, x: Tensor) -> Tensor:
        logp = torch.stack([torch.log_softmax(m(x).float() / self.temperatures[i], dim=1)
                            for i, m in enumerate(self.members)])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


@register_model
def ensemble(num_outputs: int = 101, members: str = "") -> MeanOfDistributions:
    """The mean distribution of the comma-separated ``members`` architectures (default options each),
    e.g. ``members="mobilenet_v2,efficientnet_lite0"``; the member temperatures come with the weights."""
    names = [n.strip() for n in members.split(SEPARATOR) if n.strip()]
    if not names or "ensemble" in names:
        raise ValueError(f"ensemble members {members!r}: must be architecture names separated by '{SEPARATOR}', not ensembles")
    return MeanOfDistributions([create_model(n, num_outputs=num_outputs) for n in names])


def combine(models: list[str | Path]) -> dict[str, Any]:
    """One checkpoint payload (for :func:`~dldl.checkpoint.save_checkpoint`) holding the ensemble
    of ``models``: checkpoint paths or shipped model names, each used with its EMA weights when it
    has them and at its own temperature.

    The members must agree on everything a model's input and read-out depend on (label set,
    objective, task, crop template, input and crop sizes), and their objective must predict a
    softmax distribution. The ensemble runs with flip TTA only if every member does; its temperature
    is 1 (fit one with ``experiments/calibrate.py``); its training config, used by that script to
    find the validation splits, is the first member's that has one.

    Raises:
        DldlError: naming the member that does not fit, and how.
    """
    from dldl.checkpoint import load_checkpoint, model_weights
    from dldl.losses import get_objective
    from dldl.models.spec import ModelSpec
    from dldl.pretrained import resolve_weights

    if len(models) < 2:
        raise DldlError(f"an ensemble needs at least two models, got {len(models)}")
    specs, states, configs = [], [], []
    for m in models:
        path = resolve_weights(m)
        ck = load_checkpoint(path)
        spec = ModelSpec.from_payload(ck, path)
        if spec.architecture == "ensemble":
            raise DldlError(f"{m}: is an ensemble already; give its members instead")
        if get_objective(spec.objective).distribution is not get_objective("dldl_v2").distribution:
            raise DldlError(f"{m}: objective {spec.objective!r} has no softmax distribution to average")
        specs.append(spec)
        states.append(model_weights(ck))
        configs.append(ck.get("config"))
    first = specs[0]
    same = ("labels", "objective", "task", "template", "input_size", "cache_size", "eval_crop", "mean", "std")
    for m, spec in zip(models[1:], specs[1:]):
        for name in same:
            if getattr(spec, name) != getattr(first, name):
                raise DldlError(f"{m}: {name} {getattr(spec, name)!r} differs from {models[0]}'s {getattr(first, name)!r}; "
                                "ensemble members must agree on it")
    ranges = [s.label_range for s in specs if s.label_range is not None]
    spec = first.replace(architecture="ensemble", model_kwargs={"members": SEPARATOR.join(s.architecture for s in specs)},
                         temperature=1.0, tta_flip=all(s.tta_flip for s in specs),
                         label_range=(min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None)
    state = {f"members.{i}.{k}": v.float() if v.is_floating_point() else v for i, s in enumerate(states) for k, v in s.items()}
    state["temperatures"] = torch.tensor([s.temperature for s in specs], dtype=torch.float32)
    payload: dict[str, Any] = {"spec": spec.to_dict(), "state_dict": state, "ema_state_dict": None, "epoch": None,
                               "members": [str(m) for m in models]}
    config = next((c for c in configs if c is not None), None)
    if config is not None:
        payload["config"] = config
    return payload
