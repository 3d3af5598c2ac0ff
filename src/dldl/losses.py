"""Losses of DLDL-v2 and the baselines it is compared with.

Every loss takes the network's raw ``output`` (logits) and returns a scalar. Shapes:
``N`` samples, ``K`` labels in the :class:`~dldl.labels.LabelSet`.

============== ============ ======================================================================
name           output       loss
============== ============ ======================================================================
dldl_v2        (N, K)       KL(target || softmax) + lambda * |E[p] - y|     (the paper, lambda=1)
dldl           (N, K)       KL(target || softmax)                           (DLDL, Gao et al. 2017)
softmax        (N, K)       cross-entropy on the nearest label              (DEX)
l1 / l2        (N, 1)       |f - y'| / (f - y')^2, y' = y mapped to [-1, 1] (regression)
ranking        (N, K-1)     sum of K-1 binary cross-entropies [y > l_k]     (OR-CNN / Ranking-CNN)
expectation_l1 (N, K)       |E[p] - y|                                      (the L1 term alone)
============== ============ ======================================================================

Any of them can take a batch correlation term, ``TrainConfig.pearson * (1 - r)`` with ``r`` the
Pearson correlation of the estimates and the labels over the batch (:func:`pearson_loss`; the
PLCC loss of image-quality work), for tasks judged by correlation (beauty).

KL normalisation. The reference implementation (gaobb/DLDL-v2, ``nn.KLDivCriterion(true)``)
divides the summed KL by ``N * K`` ("reference", our default), so with 101 ages the KL term is
1/101 of the per-sample KL; ``kl_reduction="batchmean"`` divides by ``N`` only (the true mean KL).
The expectation term is the mean absolute error over the batch in label units (years). For a
sample whose truth is an interval ``[low, high]`` (an age group) the training loss of ``dldl_v2``
takes ``bounds=(low, high)`` and the term becomes the distance of ``E[p]`` to the interval
(:func:`interval_l1_loss`: zero inside), while its target is :func:`~dldl.labels.interval_distribution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

from dldl.errors import ConfigError
from dldl.labels import LabelSet, expectation
from dldl.lazy import lazy_import

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")  # on first use: the Objective table is read without torch (dldl.lazy)

KLReduction = Literal["reference", "batchmean"]


def _check(output: Tensor, width: int, y: Tensor | None = None, target: Tensor | None = None) -> None:
    if output.dim() != 2 or output.shape[1] != width:
        raise ValueError(f"output must have shape (N, {width}), got {tuple(output.shape)}")
    if y is not None and y.shape != output.shape[:1]:
        raise ValueError(f"y must have shape ({output.shape[0]},) to match output {tuple(output.shape)}, got {tuple(y.shape)}")
    if target is not None and target.shape != output.shape:
        raise ValueError(f"target must have the shape of output {tuple(output.shape)}, got {tuple(target.shape)}")


def kl_divergence(logits: Tensor, target: Tensor, reduction: KLReduction = "reference") -> Tensor:
    """KL(target || softmax(logits)) with zero-probability target entries contributing 0.

    Args:
        logits: ``(N, K)`` raw scores.
        target: ``(N, K)`` label distributions (rows sum to 1).
        reduction: ``"reference"`` divides the sum by ``N*K``, ``"batchmean"`` by ``N``.

    >>> t = torch.tensor([[0.5, 0.5]])
    >>> float(kl_divergence(torch.zeros(1, 2), t))
    0.0
    """
    _check(logits, logits.shape[1] if logits.dim() == 2 else -1, target=target)
    log_p = torch.nn.functional.log_softmax(logits.float(), dim=1)
    t = target.float()
    kl = torch.where(t > 0, t * (torch.log(t.clamp_min(1e-30)) - log_p), torch.zeros_like(t)).sum()
    denom = logits.shape[0] * (logits.shape[1] if reduction == "reference" else 1)
    if reduction not in ("reference", "batchmean"):
        raise ValueError(f"unknown KL reduction {reduction!r}; use 'reference' or 'batchmean'")
    return kl / denom


def expectation_l1_loss(logits: Tensor, y: Tensor, labels: LabelSet) -> Tensor:
    """Mean ``|E[softmax(logits)] - y|`` over the batch, in label units.

    >>> float(expectation_l1_loss(torch.zeros(1, 3), torch.tensor([2.0]), LabelSet(0, 2, 1)))
    1.0
    """
    _check(logits, labels.num_labels, y=y)
    return (expectation(torch.softmax(logits.float(), dim=1), labels) - y.float()).abs().mean()


def interval_l1_loss(logits: Tensor, low: Tensor, high: Tensor, labels: LabelSet) -> Tensor:
    """Mean distance of ``E[softmax(logits)]`` to the interval ``[low, high]``: zero inside it,
    ``|E[p] - y|`` when ``low == high == y``. ``logits`` ``(N, K)``; ``low``, ``high`` ``(N,)``.

    >>> labels = LabelSet(0, 2, 1)
    >>> float(interval_l1_loss(torch.zeros(1, 3), torch.tensor([0.0]), torch.tensor([1.5]), labels))
    0.0
    >>> float(interval_l1_loss(torch.zeros(1, 3), torch.tensor([0.0]), torch.tensor([0.5]), labels))
    0.5
    >>> interval_l1_loss(torch.zeros(2, 3), torch.zeros(3), torch.zeros(3), labels)
    Traceback (most recent call last):
    ...
    ValueError: y must have shape (2,) to match output (2, 3), got (3,)
    """
    _check(logits, labels.num_labels, y=low)
    _check(logits, labels.num_labels, y=high)
    e = expectation(torch.softmax(logits.float(), dim=1), labels)
    return (torch.relu(low.float() - e) + torch.relu(e - high.float())).mean()


def pearson_loss(estimate: Tensor, y: Tensor) -> Tensor:
    """``1 - r``, with ``r`` the Pearson correlation of ``estimate`` and ``y`` over the batch.

    ``estimate``, ``y``: ``(N,)``, N >= 2. 0 when they rise together linearly, 2 when opposite;
    a batch whose labels are all equal has no correlation and gives 1 (``r`` taken as 0).

    >>> y = torch.tensor([1.0, 2.0, 3.0])
    >>> abs(round(float(pearson_loss(2 * y + 1, y)), 6)), round(float(pearson_loss(-y, y)), 6)
    (0.0, 2.0)
    >>> pearson_loss(torch.zeros(3), torch.zeros(2))
    Traceback (most recent call last):
    ...
    ValueError: estimate (3,) and y (2,) must both have shape (N,) with N >= 2
    """
    if estimate.dim() != 1 or estimate.shape != y.shape or estimate.shape[0] < 2:
        raise ValueError(f"estimate {tuple(estimate.shape)} and y {tuple(y.shape)} must both have shape (N,) with N >= 2")
    e = estimate.float() - estimate.float().mean()
    t = y.float() - y.float().mean()
    r = (e * t).sum() / (e.norm() * t.norm()).clamp_min(1e-12)
    return 1.0 - r


def consistency_loss(estimate: Tensor, other: Tensor) -> Tensor:
    """``mean |estimate - other|``: how far the estimates of two views of the same faces (two
    draws of the training augmentation: blur, sharpening, JPEG, noise, resolution, crop) differ,
    in label units; the term of ``TrainConfig.consistency`` (issue 39: an estimate that moves with
    sharpness and resolution).

    ``estimate``, ``other``: ``(N,)``, the expectations of the two views' distributions.

    >>> round(float(consistency_loss(torch.tensor([20.0, 30.0]), torch.tensor([21.0, 28.0]))), 6)
    1.5
    >>> consistency_loss(torch.zeros(3), torch.zeros(2))
    Traceback (most recent call last):
    ...
    ValueError: estimate (3,) and other (2,) must both have shape (N,)
    """
    if estimate.dim() != 1 or estimate.shape != other.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and other {tuple(other.shape)} must both have shape (N,)")
    return (estimate.float() - other.float()).abs().mean()


def distribution_consistency_loss(logits: Tensor, other: Tensor) -> Tensor:
    """``(KL(sg(q) || p) + KL(sg(p) || q)) / 2``, batch mean, where ``p`` and ``q`` are the softmax of
    two views of the same faces and ``sg`` stops the gradient: each view's distribution is pulled
    toward the other's, whole, not only its expectation; the term of ``TrainConfig.consistency``
    with ``consistency_on: distribution`` (issue 39 item 4).

    ``logits``, ``other``: ``(N, K)``, the raw scores of the two views.

    >>> float(distribution_consistency_loss(torch.zeros(2, 3), torch.zeros(2, 3)))
    0.0
    >>> round(float(distribution_consistency_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]]))), 4)
    0.1155
    >>> distribution_consistency_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    Traceback (most recent call last):
    ...
    ValueError: logits (2, 3) and other (2, 4) must both have shape (N, K)
    """
    if logits.dim() != 2 or logits.shape != other.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and other {tuple(other.shape)} must both have shape (N, K)")
    p = torch.softmax(logits.float(), dim=1).detach()
    q = torch.softmax(other.float(), dim=1).detach()
    return (kl_divergence(logits, q, "batchmean") + kl_divergence(other, p, "batchmean")) / 2


def dldl_loss(logits: Tensor, target: Tensor, kl_reduction: KLReduction = "reference") -> Tensor:
    """DLDL: the KL term alone. ``logits``, ``target``: ``(N, K)``."""
    return kl_divergence(logits, target, kl_reduction)


def dldl_v2_loss(
    logits: Tensor, target: Tensor, y: Tensor, labels: LabelSet, lam: float = 1.0, kl_reduction: KLReduction = "reference"
) -> Tensor:
    """DLDL-v2: ``KL(target || p) + lam * mean|E[p] - y|``.

    Args:
        logits: ``(N, K)``; target: ``(N, K)`` label distributions; y: ``(N,)`` labels.

    >>> labels = LabelSet(0, 4, 1)
    >>> y = torch.tensor([2.0]); t = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    >>> float(dldl_v2_loss(torch.tensor([[0.0, 0.0, 50.0, 0.0, 0.0]]), t, y, labels)) < 1e-6
    True
    """
    return kl_divergence(logits, target, kl_reduction) + lam * expectation_l1_loss(logits, y, labels)


def softmax_loss(logits: Tensor, y: Tensor, labels: LabelSet) -> Tensor:
    """DEX-style cross-entropy against the label nearest to ``y``. ``logits`` ``(N, K)``, ``y`` ``(N,)``.

    >>> float(softmax_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0.0]), LabelSet(0, 1, 1))) == float(torch.log(torch.tensor(2.0)))
    True
    """
    _check(logits, labels.num_labels, y=y)
    return torch.nn.functional.cross_entropy(logits.float(), labels.nearest_index(y))


def to_unit_range(y: Tensor, labels: LabelSet) -> Tensor:
    """Map labels linearly from ``[start, stop]`` to ``[-1, 1]`` (the reference's ``mapminmax``).

    >>> to_unit_range(torch.tensor([0.0, 50.0, 100.0]), LabelSet(0, 100, 1))
    tensor([-1.,  0.,  1.])
    """
    span = max(labels.stop - labels.start, 1e-12)
    return (y.float() - labels.start) * (2.0 / span) - 1.0


def from_unit_range(f: Tensor, labels: LabelSet) -> Tensor:
    """Inverse of :func:`to_unit_range`."""
    return (f.float() + 1.0) * ((labels.stop - labels.start) / 2.0) + labels.start


def l1_loss(output: Tensor, y: Tensor, labels: LabelSet) -> Tensor:
    """L1 regression on labels mapped to [-1, 1]. ``output`` ``(N, 1)``, ``y`` ``(N,)``."""
    _check(output, 1, y=y)
    return (output[:, 0].float() - to_unit_range(y, labels)).abs().mean()


def l2_loss(output: Tensor, y: Tensor, labels: LabelSet) -> Tensor:
    """L2 regression on labels mapped to [-1, 1]. ``output`` ``(N, 1)``, ``y`` ``(N,)``."""
    _check(output, 1, y=y)
    return ((output[:, 0].float() - to_unit_range(y, labels)) ** 2).mean()


def ranking_targets(y: Tensor, labels: LabelSet) -> Tensor:
    """Binary ranking targets ``[y > l_k]`` for ``k = 1..K-1`` (the first K-1 labels), ``(N, K-1)``.

    >>> ranking_targets(torch.tensor([1.0]), LabelSet(0, 3, 1))
    tensor([[1., 0., 0.]])
    """
    return (y.float()[:, None] > torch.as_tensor(labels.values(), dtype=torch.float32, device=y.device)[None, :-1]).float()


def ranking_loss(logits: Tensor, y: Tensor, labels: LabelSet) -> Tensor:
    """Ranking-CNN / OR-CNN: mean over samples of the sum over the K-1 binary BCE terms.

    ``logits`` ``(N, K-1)``: logit of ``P(y > l_k)``.
    """
    _check(logits, labels.num_labels - 1, y=y)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), ranking_targets(y, labels), reduction="none")
    return bce.sum(dim=1).mean()


def ranking_to_distribution(logits: Tensor) -> Tensor:
    """The label distribution a ranking model implies (the paper's unification).

    With ``c_k = P(y > l_k) = sigmoid(logits_k)`` for ``k = 1..K-1``, set ``c_0 = 1`` and
    ``c_K = 0``; then ``p_k = c_{k-1} - c_k`` for ``k = 1..K``. Ranking-CNN thus learns a label
    distribution in cumulative form. The binary classifiers are trained independently, so ``c``
    may rise somewhere; it is made non-increasing first (running minimum), which keeps ``p >= 0``.

    Args:
        logits: ``(N, K-1)``.
    Returns:
        ``(N, K)`` distributions (rows sum to 1).

    >>> ranking_to_distribution(torch.tensor([[20.0, -20.0]])).round(decimals=4)
    tensor([[0., 1., 0.]])
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, K-1), got {tuple(logits.shape)}")
    c = torch.sigmoid(logits.float())
    c = torch.cummin(c, dim=1).values
    ones = torch.ones_like(c[:, :1])
    c = torch.cat([ones, c, torch.zeros_like(ones)], dim=1)
    return c[:, :-1] - c[:, 1:]


@dataclass(frozen=True)
class Objective:
    """How a loss is trained and read out.

    ``num_outputs(labels)`` is the head width; ``loss(output, target, y, labels, **options)`` the
    training loss; ``distribution(output)`` the ``(N, K)`` predicted label distribution, or ``None``
    for plain regression; ``estimate(output, labels)`` the ``(N,)`` predicted value.
    """

    name: str
    num_outputs: Callable[[LabelSet], int]
    loss: Callable[..., Tensor]
    distribution: Callable[[Tensor], Tensor] | None
    estimate: Callable[[Tensor, LabelSet], Tensor]

    @property
    def softmax_over_labels(self) -> bool:
        """Whether the head's ``(N, K)`` output is logits whose softmax is the label distribution, so that
        two heads can be ensembled or held to one distribution (a ranking head's outputs are cumulative).

        >>> OBJECTIVES["dldl_v2"].softmax_over_labels, OBJECTIVES["ranking"].softmax_over_labels, OBJECTIVES["l1"].softmax_over_labels
        (True, False, False)
        """
        return self.distribution is _softmax


def _softmax(output: Tensor) -> Tensor:
    return torch.softmax(output.float(), dim=1)


def _expected(output: Tensor, labels: LabelSet) -> Tensor:
    return expectation(_softmax(output), labels)


def _ranking_estimate(output: Tensor, labels: LabelSet) -> Tensor:
    # E[p] of the implied distribution = l_1 + step * sum_k P(y > l_k)
    return labels.start + labels.step * torch.sigmoid(output.float()).sum(dim=1)


def _regression_estimate(output: Tensor, labels: LabelSet) -> Tensor:
    return from_unit_range(output[:, 0], labels)


def _k(labels: LabelSet) -> int:
    return labels.num_labels


# training losses with the common signature (output, target, y, labels, **options)
def _train_dldl_v2(out: Tensor, t: Tensor, y: Tensor, labels: LabelSet, lam: float = 1.0,
                   kl_reduction: KLReduction = "reference", bounds: tuple[Tensor, Tensor] | None = None,
                   **_: object) -> Tensor:
    if bounds is None:
        return dldl_v2_loss(out, t, y, labels, lam, kl_reduction)
    return kl_divergence(out, t, kl_reduction) + lam * interval_l1_loss(out, bounds[0], bounds[1], labels)


def _train_dldl(out: Tensor, t: Tensor, y: Tensor, labels: LabelSet, kl_reduction: KLReduction = "reference",
                **_: object) -> Tensor:
    return dldl_loss(out, t, kl_reduction)


def _on_y(fn: Callable[[Tensor, Tensor, LabelSet], Tensor]) -> Callable[..., Tensor]:
    """Adapt a loss of ``(output, y, labels)`` to the common signature."""
    return lambda out, t, y, labels, **_: fn(out, y, labels)


_ONE = lambda labels: 1  # noqa: E731
_K_MINUS_1 = lambda labels: labels.num_labels - 1  # noqa: E731

OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in [
        Objective("dldl_v2", _k, _train_dldl_v2, _softmax, _expected),
        Objective("dldl", _k, _train_dldl, _softmax, _expected),
        Objective("softmax", _k, _on_y(softmax_loss), _softmax, _expected),
        Objective("expectation_l1", _k, _on_y(expectation_l1_loss), _softmax, _expected),
        Objective("l1", _ONE, _on_y(l1_loss), None, _regression_estimate),
        Objective("l2", _ONE, _on_y(l2_loss), None, _regression_estimate),
        Objective("ranking", _K_MINUS_1, _on_y(ranking_loss), ranking_to_distribution, _ranking_estimate),
    ]
}


def get_objective(name: str) -> Objective:
    """The :class:`Objective` called ``name`` (see the table in this module's docstring)."""
    if name not in OBJECTIVES:
        raise ConfigError("loss", name, f"one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
