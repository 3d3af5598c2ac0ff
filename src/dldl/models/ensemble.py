"""Several trained networks as one model: the mean of their predicted label distributions.

An ensemble averages what its members predict (Lakshminarayanan et al., NeurIPS 2017), here the
label distributions, each at its member's own calibrated temperature. Its output is the log of that
mean, so the usual read-out (softmax, then the expectation) gives back the mean distribution, and
the estimate is the mean of the members' estimates (the expectation is linear). A temperature fitted
on the ensemble afterwards (:func:`dldl.release.calibrate`) sharpens or widens the mixture. It is one
``nn.Module``, so it is saved, exported to ONNX and shipped like any other network.

>>> from dldl.labels import LabelSet
>>> from dldl.models.spec import ModelSpec
>>> spec = ModelSpec("ensemble", LabelSet(0, 10, 1), input_size=32, model_kwargs={"members": "tiny_age_net,tiny_age_net"})
>>> tuple(spec.create_model().eval()(torch.zeros(2, 3, 32, 32)).shape)
(2, 11)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

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
