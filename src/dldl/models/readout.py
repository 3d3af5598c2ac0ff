"""``ReadOut``: a network together with its objective's read-out, from input to estimate.

The network maps a normalised batch to raw outputs (logits); the :class:`~dldl.losses.Objective`
of its :class:`~dldl.models.spec.ModelSpec` turns them into estimates and label distributions, at
the spec's temperature. ``ReadOut`` is both what the torch runtime runs and what ``dldl export``
writes to ONNX, so an exported graph gives the estimate and the distribution itself and ONNX
Runtime needs no torch beside it (:class:`dldl.export.OnnxNetwork`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from dldl.losses import get_objective
from dldl.models.spec import ModelSpec


class ReadOut(nn.Module):
    """``network`` and the read-out of ``spec``: float ``(N, 3, S, S)`` normalised images ->
    ``(estimate (N,), distribution (N, K))``, or ``(estimate,)`` for objectives without a
    distribution (plain regression).

    >>> spec = ModelSpec("tiny_age_net", __import__("dldl").LabelSet(0, 10, 1), input_size=32)
    >>> est, dist = ReadOut(spec.create_model(), spec).eval()(torch.zeros(2, 3, 32, 32))
    >>> tuple(est.shape), tuple(dist.shape)
    ((2,), (2, 11))
    """

    def __init__(self, network: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.network = network
        self.spec = spec
        self.objective = get_objective(spec.objective)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.network(x).float()
        if self.objective.distribution is None:
            return (self.objective.estimate(out, self.spec.labels),)
        if self.spec.temperature != 1.0:
            out = out / self.spec.temperature
        return self.objective.estimate(out, self.spec.labels), self.objective.distribution(out)

    @torch.no_grad()
    def run(self, x: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`forward` on a numpy batch (in eval mode, on ``device``), as numpy:
        ``(N,)`` float32 estimates and ``(N, K)`` float32 distributions (``None`` without one)."""
        was_training = self.network.training
        self.network.eval()
        try:
            batch = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
            out = self(batch)
        finally:
            self.network.train(was_training)
        est = out[0].float().cpu().numpy()
        return est, out[1].float().cpu().numpy() if len(out) > 1 else None
