import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dldl.labels import LabelSet, expectation, gaussian_distribution
from dldl.losses import (
    OBJECTIVES,
    dldl_loss,
    dldl_v2_loss,
    expectation_l1_loss,
    from_unit_range,
    get_objective,
    kl_divergence,
    l1_loss,
    l2_loss,
    pearson_loss,
    ranking_loss,
    ranking_targets,
    ranking_to_distribution,
    softmax_loss,
    to_unit_range,
)

AGES = LabelSet(0, 100, 1)


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 101, (n,), generator=g).float()
    return torch.randn(n, 101, generator=g), y, gaussian_distribution(y, 2.0, AGES)


def test_kl_matches_torch_and_reference_normalisation():
    logits, y, t = _batch()
    ref = torch.nn.functional.kl_div(torch.log_softmax(logits, 1), t, reduction="sum")
    assert torch.isclose(kl_divergence(logits, t, "batchmean"), ref / 6, rtol=1e-5)
    # the reference implementation (KLDivCriterion, sizeAverage) divides by N*K
    assert torch.isclose(kl_divergence(logits, t, "reference"), ref / (6 * 101), rtol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        kl_divergence(logits, t, "sum")


def test_kl_is_zero_at_target_and_ignores_zero_entries():
    t = torch.tensor([[0.0, 0.25, 0.75]])
    assert kl_divergence(torch.log(t.clamp_min(1e-45)), t).abs() < 1e-6


def test_dldl_v2_is_kl_plus_lambda_l1():
    logits, y, t = _batch()
    for lam in (0.1, 1.0, 10.0):
        expected = kl_divergence(logits, t) + lam * (expectation(torch.softmax(logits, 1), AGES) - y).abs().mean()
        assert torch.isclose(dldl_v2_loss(logits, t, y, AGES, lam), expected)
    assert torch.isclose(dldl_loss(logits, t), kl_divergence(logits, t))


def test_dldl_v2_gradients_move_expectation_towards_label():
    _, y, t = _batch(4)
    logits = torch.zeros(4, 101, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    start = expectation_l1_loss(logits, y, AGES).item()
    for _ in range(100):
        opt.zero_grad()
        dldl_v2_loss(logits, t, y, AGES).backward()
        opt.step()
    assert expectation_l1_loss(logits, y, AGES).item() < start / 10


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(N, 101\).*\(3, 7\)"):
        dldl_v2_loss(torch.zeros(3, 7), torch.zeros(3, 7), torch.zeros(3), AGES)
    with pytest.raises(ValueError, match=r"\(3,\).*\(3, 101\).*\(2,\)"):
        softmax_loss(torch.zeros(3, 101), torch.zeros(2), AGES)


def test_softmax_uses_nearest_label():
    logits = torch.full((1, 101), -30.0)
    logits[0, 40] = 30.0
    assert softmax_loss(logits, torch.tensor([40.4]), AGES) < 1e-6
    assert softmax_loss(logits, torch.tensor([41.0]), AGES) > 10


def test_regression_losses_on_unit_range():
    y = torch.tensor([0.0, 50.0, 100.0])
    assert torch.allclose(from_unit_range(to_unit_range(y, AGES), AGES), y)
    f = to_unit_range(y, AGES)[:, None]
    assert l1_loss(f, y, AGES) == 0 and l2_loss(f, y, AGES) == 0
    assert torch.isclose(l1_loss(f + 0.1, y, AGES), torch.tensor(0.1))
    assert torch.isclose(l2_loss(f + 0.1, y, AGES), torch.tensor(0.01))


def test_ranking_targets_and_loss():
    labels = LabelSet(0, 4, 1)
    t = ranking_targets(torch.tensor([2.0, 0.0, 4.0]), labels)
    assert t.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    perfect = (t * 2 - 1) * 30
    assert ranking_loss(perfect, torch.tensor([2.0, 0.0, 4.0]), labels) < 1e-6
    assert torch.isclose(ranking_loss(torch.zeros(1, 4), torch.tensor([2.0]), labels), torch.tensor(4 * math.log(2)))


def test_ranking_outputs_imply_a_label_distribution():
    """The paper's unification: P(y > l_k) from a ranking model is a cumulative label distribution."""
    labels = LabelSet(0, 100, 1)
    target = gaussian_distribution(torch.tensor([30.0, 61.0]), 3.0, labels)
    survival = 1 - target.cumsum(1)[:, :-1]  # P(y > l_k), k = 1..K-1
    logits = torch.logit(survival.clamp(1e-6, 1 - 1e-6))
    implied = ranking_to_distribution(logits)
    assert implied.shape == (2, 101)
    assert torch.allclose(implied.sum(1), torch.ones(2), atol=1e-5)
    assert (implied >= 0).all()
    assert torch.allclose(implied, target, atol=1e-5)
    # and its expectation is the ranking estimate l_1 + step * sum_k P(y > l_k)
    est = get_objective("ranking").estimate(logits, labels)
    assert torch.allclose(est, expectation(implied, labels), atol=1e-3)


def test_ranking_distribution_is_valid_for_non_monotone_outputs():
    p = ranking_to_distribution(torch.tensor([[-3.0, 2.0, 5.0, -1.0]]))
    assert (p >= 0).all() and torch.isclose(p.sum(), torch.tensor(1.0))


def test_every_objective_trains_and_reads_out():
    labels = LabelSet(0, 10, 1)
    y = torch.tensor([2.0, 7.0])
    t = gaussian_distribution(y, 1.0, labels)
    for name, obj in OBJECTIVES.items():
        out = torch.zeros(2, obj.num_outputs(labels), requires_grad=True)
        loss = obj.loss(out, t, y, labels, lam=1.0, kl_reduction="reference")
        loss.backward()
        assert out.grad is not None and torch.isfinite(loss), name
        assert obj.estimate(out.detach(), labels).shape == (2,), name
        if obj.distribution is not None:
            d = obj.distribution(out.detach())
            assert d.shape == (2, labels.num_labels) and torch.allclose(d.sum(1), torch.ones(2)), name
    with pytest.raises(ValueError, match="loss 'nope': must be one of dldl_v2"):
        get_objective("nope")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=3, max_size=20), st.floats(0.1, 5), st.floats(-5, 5), st.integers(0, 99))
def test_pearson_loss_is_one_minus_r_and_blind_to_scale_and_shift(ys, a, b, seed):
    y = torch.tensor(ys, dtype=torch.float64)
    e = torch.randn(len(ys), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    loss = float(pearson_loss(e, y))
    assert 0.0 - 1e-6 <= loss <= 2.0 + 1e-6
    if float(y.std()) > 1e-3:  # r is defined; for targets all but equal (spread 1e-16) the clamped denominator decides
        assert math.isclose(float(pearson_loss(a * e + b, y)), loss, abs_tol=1e-5)
        r = float(torch.corrcoef(torch.stack([e, y]))[0, 1])
        assert math.isclose(loss, 1 - r, abs_tol=1e-5)


def test_pearson_loss_gradient_raises_the_correlation():
    y = torch.tensor([1.0, 4.0, 2.0, 8.0, 5.0])
    e = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0], requires_grad=True)
    opt = torch.optim.SGD([e], lr=1.0)
    start = pearson_loss(e, y).item()
    for _ in range(50):
        opt.zero_grad()
        pearson_loss(e, y).backward()
        opt.step()
    assert pearson_loss(e, y).item() < start / 10


def test_pearson_loss_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"estimate \(4,\) and y \(3,\)"):
        pearson_loss(torch.zeros(4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"N >= 2"):
        pearson_loss(torch.zeros(1), torch.zeros(1))
