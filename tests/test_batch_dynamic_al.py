"""Batch-aware dynamicAL, pairwise gradient features and stochastic batches."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

import skal
from skal.ntk import approximation_ratio
from skal.pairwise import PairwiseGradients, sketch_error_bound
from skal.strategies import (
    BatchDynamicAL,
    DynamicAL,
    QueryContext,
    StochasticBatch,
    get_strategy,
)

from .test_dynamic_al import _cached_cases, _context

# models of test_dynamic_al with Linear, Conv (grouped, dilated, 1-d),
# BatchNorm, shared layers, in-place ops and parameters without closed form
EXACT_MODELS = [
    "mlp",
    "tutorial_cnn",
    "bn_dropout_cnn",
    "skal_resnet18",
    "shared_inplace",
    "conv_variants",
    "uncovered",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _full_gradients(module, X, X_lab, y_lab):
    """Per-sample gradients in float64, flattened: (n, P), G_S and labels."""
    m = copy.deepcopy(module).double().eval()
    params = [p for p in m.parameters() if p.requires_grad]

    def grad(x, y):
        x = torch.as_tensor(x[None], dtype=torch.float64)
        loss = F.cross_entropy(m(x), torch.as_tensor([y]))
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    g_s = sum(grad(x, int(y)) for x, y in zip(X_lab, y_lab))
    with torch.no_grad():
        labels = m(torch.as_tensor(X, dtype=torch.float64)).argmax(1).numpy()
    G = torch.stack([grad(x, int(y)) for x, y in zip(X, labels)])
    return G.numpy(), g_s.numpy(), labels


def _objective(G, g_s, gamma, chosen, lam=1.0):
    """Σ Δ({u}|S) + λ Σ_{u≠u'} g_uᵀg_u'; for λ = 1, ‖G_Q‖² + γ G_Qᵀ G_S."""
    g_q = G[chosen].sum(0)
    singles = sum(G[u] @ G[u] for u in chosen)
    return float(singles + gamma * g_q @ g_s + lam * (g_q @ g_q - singles))


def _greedy_reference(G, g_s, gamma, n, lam=1.0):
    """Greedy maximiser of the objective from full float64 gradients."""
    chosen = []
    for _ in range(n):
        rest = [u for u in range(len(G)) if u not in chosen]
        values = [_objective(G, g_s, gamma, chosen + [u], lam) for u in rest]
        chosen.append(rest[int(np.argmax(values))])
    return chosen, _objective(G, g_s, gamma, chosen, lam)


@pytest.fixture(scope="module")
def cases():
    return _cached_cases(_full_gradients)


@pytest.mark.parametrize("name", EXACT_MODELS)
def test_pairwise_products_match_float64_loop(name, cases):
    module, X, X_lab, y_lab, G, g_s, labels = cases(name)
    feats = PairwiseGradients(module).features(
        torch.as_tensor(X), lambda z: z.argmax(1)
    )
    np.testing.assert_array_equal(feats.targets.numpy(), labels)
    ref = G @ G.T
    got = feats.gram().double().numpy()
    scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
    assert np.max(np.abs(got - ref) / scale) <= 1e-4
    np.testing.assert_allclose(np.diag(got), feats.sq_norms.double().numpy(), rtol=1e-4)


@pytest.mark.parametrize("name", EXACT_MODELS)
def test_greedy_picks_and_objective_match_float64_brute_force(name, cases):
    module, X, X_lab, y_lab, G, g_s, _ = cases(name)
    n = len(X) // 2
    for gamma, lam in ((0.0, 1.0), (2.0, 1.0), (2.0, -1.0)):
        ref_idx, ref_obj = _greedy_reference(G, g_s, gamma, n, lam)
        strategy = BatchDynamicAL(gamma=gamma, pairwise_weight=lam, batch_size=5)
        idx = strategy.select(_context(module, X_lab, y_lab), X, n)
        np.testing.assert_array_equal(idx, ref_idx, err_msg=f"{name} {gamma} {lam}")
        assert abs(strategy.objective_ - ref_obj) <= 1e-4 * abs(ref_obj)
        if lam == 1.0:
            g_q = G[idx].sum(0)
            assert math.isclose(
                strategy.objective_, g_q @ g_q + gamma * g_q @ g_s, rel_tol=1e-4
            )


def test_singles_over_objective_is_the_approximation_ratio(cases):
    module, X, X_lab, y_lab, *_ = cases("bn_dropout_cnn")
    strategy = BatchDynamicAL(gamma=2.0)
    idx = strategy.select(_context(module, X_lab, y_lab), X, 6)
    ratio = approximation_ratio(module, X_lab, y_lab, X[idx])
    assert math.isclose(strategy.singles_ / strategy.objective_, ratio, rel_tol=1e-4)


def test_infinite_gamma_zero_weight_and_first_pick_agree_with_dynamic_al(cases):
    module, X, X_lab, y_lab, *_ = cases("tutorial_cnn")
    context = _context(module, X_lab, y_lab)
    top = DynamicAL(gamma=math.inf).select(context, X, 5)
    np.testing.assert_array_equal(
        BatchDynamicAL(gamma=math.inf).select(_context(module, X_lab, y_lab), X, 5),
        top,
    )
    np.testing.assert_array_equal(
        BatchDynamicAL(pairwise_weight=0.0).select(
            _context(module, X_lab, y_lab), X, 5
        ),
        DynamicAL(gamma=2.0).select(_context(module, X_lab, y_lab), X, 5),
    )
    u = DynamicAL(gamma=2.0).utility(context, X)
    first = BatchDynamicAL().select(_context(module, X_lab, y_lab), X, 3)[0]
    assert first == int(np.argmax(u))


def test_exact_features_are_smaller_than_gradients(cases):
    module, X, *_ = cases("tutorial_cnn")
    feats = PairwiseGradients(module).features(
        torch.as_tensor(X), lambda z: z.argmax(1)
    )
    n_params = sum(p.numel() for p in module.parameters())
    assert feats.size_per_sample < n_params / 2
    assert feats.factored  # the Linear layers are kept as factors


class _Sketchable(nn.Module):
    """One Conv2d and two Linear layers, all larger than the sketch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.fc1 = nn.Linear(12 * 16, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        h = F.max_pool2d(torch.tanh(self.conv(x)), 2)
        return self.fc2(torch.tanh(self.fc1(h.flatten(1))))


def _sketch_errors(module, x, y, k, seeds):
    exact = PairwiseGradients(module).features(x, y)
    ref = exact.gram().double()
    norms = ref.diagonal().sqrt()
    scale = torch.outer(norms, norms)
    off = ~torch.eye(len(x), dtype=torch.bool)
    errors = []
    for seed in seeds:
        sk = PairwiseGradients(module, sketch_size=k, seed=seed).features(x, y)
        assert sk.size_per_sample < exact.size_per_sample
        np.testing.assert_allclose(sk.sq_norms.numpy(), exact.sq_norms.numpy())
        errors.append(((sk.gram().double() - ref) / scale)[off])
    return torch.stack(errors), ref[off]


def test_sketch_error_bound_holds_with_the_stated_probability():
    torch.manual_seed(0)
    module = _Sketchable().eval()
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    k = 32
    errors, ref = _sketch_errors(module, x, y, k, range(300))
    for delta in (0.05, 0.2):
        t = sketch_error_bound(k, delta)
        assert float((errors.abs() >= t).double().mean()) <= delta
    # unbiased: the mean over sketches is within 4 standard errors of zero
    mean, sem = errors.mean(0), errors.std(0) / math.sqrt(len(errors))
    assert bool((mean.abs() <= 4 * sem + 1e-6).all())
    # and the variance bound 8/k (relative to ‖g_u‖²‖g_q‖²) holds
    assert float(errors.var(0).max()) <= 8 / k


def _assert_variance(samples, expected):
    """The sample variance is within 4 of its standard errors of ``expected``.

    The products are heavy-tailed (kurtosis of one term near 70), so the standard
    error comes from the sample's fourth central moment.
    """
    centred = samples - samples.mean()
    m2, m4 = np.mean(centred**2), np.mean(centred**4)
    se = math.sqrt((m4 - m2**2) / len(samples))
    assert abs(m2 - expected) <= 4 * se, (m2, expected, se)
    assert 4 * se < 0.5 * expected  # the check has power


def test_sketch_variance_matches_isserlis_formula():
    """One sketched Linear layer: Var = Var(t) / k with the exact formula."""
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(20, 15, bias=False)).eval()
    x, y = torch.randn(2, 20), torch.tensor([3, 7])
    k = 16
    estimates = []
    for seed in range(3000):
        feats = PairwiseGradients(module, sketch_size=k, seed=seed).features(x, y)
        estimates.append(float(feats.dense[0] @ feats.dense[1]))
    out = module(x)
    dy = torch.softmax(out, 1) - F.one_hot(y, 15)
    Gu, Gq = (torch.outer(dy[i], x[i]).double().detach() for i in range(2))
    R = Gu.T @ Gq
    var_t = (
        Gu.pow(2).sum() * Gq.pow(2).sum()
        + (Gu * Gq).sum() ** 2
        + 2 * (Gq @ Gu.T).pow(2).sum()
        + 2 * R.pow(2).sum()
        + 2 * torch.trace(R @ R)
    )
    est = np.array(estimates)
    assert abs(est.mean() - float((Gu * Gq).sum())) <= 4 * math.sqrt(
        var_t / k / len(est)
    )
    _assert_variance(est, float(var_t) / k)


def test_dense_sketch_variance_matches_gaussian_formula():
    """A small convolution is projected densely: Var = (‖x‖²‖y‖² + ⟨x,y⟩²)/k."""
    torch.manual_seed(2)
    module = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.Flatten()).eval()
    x, y = torch.randn(2, 2, 5, 5), torch.tensor([4, 20])
    grads = []
    for i in range(2):
        loss = F.cross_entropy(module(x[i : i + 1]), y[i : i + 1])
        grads.append(torch.autograd.grad(loss, module[0].weight)[0].flatten().double())
    k = 8
    estimates = []
    for seed in range(3000):
        engine = PairwiseGradients(module, sketch_size=k, seed=seed)
        feats = engine.features(x, y)
        assert any(key[1:] == ("dense",) for key in engine._projections)
        estimates.append(float(feats.dense[0] @ feats.dense[1]))
    xy = float(grads[0] @ grads[1])
    var = (float(grads[0] @ grads[0]) * float(grads[1] @ grads[1]) + xy**2) / k
    est = np.array(estimates)
    assert abs(est.mean() - xy) <= 4 * math.sqrt(var / len(est))
    _assert_variance(est, var)


def test_sketched_strategy_selects_and_records_objective(cases):
    module, X, X_lab, y_lab, G, g_s, _ = cases("tutorial_cnn")
    strategy = BatchDynamicAL(sketch_size=16)
    idx = strategy.select(_context(module, X_lab, y_lab), X, 5)
    assert len(set(idx.tolist())) == 5
    assert idx[0] == _greedy_reference(G, g_s, 2.0, 1)[0][0]


@pytest.mark.parametrize(
    "params, error",
    [
        ({"gamma": -1}, ValueError),
        ({"pairwise_weight": float("inf")}, ValueError),
        ({"pairwise_weight": "1"}, TypeError),
        ({"pseudo_label": "max"}, ValueError),
        ({"sketch_size": 0}, ValueError),
        ({"sketch_size": 2.5}, TypeError),
        ({"batch_size": 0}, ValueError),
    ],
)
def test_batch_dynamic_al_invalid_parameters(params, error, cases):
    module, X, X_lab, y_lab, *_ = cases("mlp")
    (name,) = params
    with pytest.raises(error, match=f"The '{name}' parameter of BatchDynamicAL"):
        BatchDynamicAL(**params).select(_context(module, X_lab, y_lab), X, 3)


def test_batch_dynamic_al_has_no_per_sample_utility():
    assert get_strategy("dynamic_al_batch").per_sample is False
    with pytest.raises(TypeError, match="selects a set"):
        BatchDynamicAL().utility(None, None)


# ------------------------------------------------------------ stochastic batch
class _Fixed(skal.strategies.QueryStrategy):
    def __init__(self, scores=None):
        self.scores = scores

    def utility(self, context, X):
        return np.asarray(self.scores, dtype=float)


def _ctx(seed):
    return QueryContext(
        LogisticRegression(), [0, 1], None, np.array([]), np.random.RandomState(seed)
    )


@pytest.mark.parametrize(
    "mode, beta, expected",
    [
        ("power", 1.0, lambda s, r: s),
        ("power", 2.0, lambda s, r: s**2),
        ("softmax", 1.5, lambda s, r: np.exp(1.5 * s)),
        ("softrank", 1.0, lambda s, r: 1.0 / r),
    ],
)
def test_single_draw_follows_the_stated_distribution(mode, beta, expected):
    scores = np.array([0.1, 0.4, 0.2, 0.8, 0.5])
    ranks = np.array([5, 3, 4, 1, 2])
    p = expected(scores, ranks)
    p = p / p.sum()
    strategy = StochasticBatch(_Fixed(scores), mode=mode, beta=beta)
    rs = np.random.RandomState(0)
    ctx = QueryContext(LogisticRegression(), [0, 1], None, np.array([]), rs)
    n_draws = 4000
    counts = np.bincount(
        [strategy.select(ctx, None, 1)[0] for _ in range(n_draws)], minlength=5
    )
    # each frequency within 4.5 binomial standard deviations
    sd = np.sqrt(p * (1 - p) / n_draws)
    assert np.all(np.abs(counts / n_draws - p) <= 4.5 * sd), (counts / n_draws, p)


def test_batches_are_distinct_reproducible_and_respect_zero_scores():
    scores = np.array([0.0, 0.3, 0.0, 0.9, 0.6, 0.2])
    strategy = StochasticBatch(_Fixed(scores))
    picks = [strategy.select(_ctx(s), None, 5) for s in (0, 0, 1)]
    np.testing.assert_array_equal(picks[0], picks[1])
    for p in picks:
        assert len(set(p.tolist())) == 5
        # zero scores have probability 0: drawn only after all positive ones
        assert set(p[:4].tolist()) == {1, 3, 4, 5}
    top = StochasticBatch(_Fixed(scores), beta=math.inf).select(_ctx(0), None, 3)
    np.testing.assert_array_equal(top, [3, 4, 1])


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"mode": "rank"}, ValueError, "'mode' parameter of StochasticBatch"),
        ({"beta": -1.0}, ValueError, r"'beta' .* \[0, inf\]; got -1.0"),
        ({"beta": float("nan")}, ValueError, r"'beta' .* \[0, inf\]; got nan"),
        ({"beta": "1"}, TypeError, "'beta' .* got '1' of type str"),
        ({"base": "badge"}, ValueError, "per-sample"),
        ({"base": "nope"}, ValueError, "not a registered strategy"),
    ],
)
def test_stochastic_batch_invalid_parameters(params, error, match):
    with pytest.raises(error, match=match):
        StochasticBatch(**params).select(_ctx(0), np.zeros((3, 2)), 2)


def test_power_mode_rejects_negative_scores():
    strategy = StochasticBatch(_Fixed([0.2, -0.1, 0.3]))
    with pytest.raises(ValueError, match="non-negative"):
        strategy.select(_ctx(0), None, 2)
    softrank = StochasticBatch(_Fixed([0.2, -0.1, 0.3]), mode="softrank")
    assert len(softrank.select(_ctx(0), None, 2)) == 2
