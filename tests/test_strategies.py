"""Baseline strategies: core-set, BADGE, BALD and ALBL."""

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from torch import nn

import skal
from skal.strategies import (
    ALBL,
    BALD,
    _blocks,
    _kmeanspp,
    diversity,
    exp4p_probabilities,
    exp4p_update,
    get_strategy,
    gradient_embedding_factors,
    k_center_greedy,
    kmeans_pp_gradient,
    mutual_information,
)
from skal.strategies._blocks import _half_products_accumulate_in_float32, _HalfRows
from skal.strategies._kcenter import _NEAR_TIES, _LazyKCenter
from skal.strategies._kmeanspp import _GradientSeeding, _has_class_form
from skal.strategies.context import QueryContext


def make_net(**kwargs):
    params = dict(
        module__hidden_units=(16,),
        module__dropout=0.3,
        max_epochs=3,
        batch_size=32,
    )
    params.update(kwargs)
    return skal.NeuralNetClassifier(skal.nets.MLP, **params)


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    return skal.ActiveLearner(make_net(), strategy="entropy", random_state=0).fit(X, y)


def learner_with(fitted, strategy):
    """A copy of the fitted learner with another strategy (no retraining)."""
    learner = pickle.loads(pickle.dumps(fitted))
    learner.strategy = strategy
    learner.strategy_ = get_strategy(strategy)
    return learner


# ------------------------------------------------------------------ core-set
def brute_force_k_center(candidates, centers, n):
    cand = np.asarray(candidates, dtype=float)
    dist = ((cand[:, None] - np.asarray(centers, dtype=float)[None]) ** 2).sum(-1)
    min_dist = dist.min(1)
    picked = []
    for _ in range(n):
        idx = int(np.argmax(min_dist))
        picked.append(idx)
        min_dist = np.minimum(min_dist, ((cand - cand[idx]) ** 2).sum(-1))
    return np.array(picked)


def test_k_center_greedy_on_a_line():
    # centre at 0; candidates 1, 2, 4, 10, 11: farthest is 11, then 4
    # (distance 4 to 0, 7 to 11), then 2 (distance 2 to both 0 and 4)
    points = torch.tensor([[1.0], [2.0], [4.0], [10.0], [11.0]])
    rs = np.random.RandomState(0)
    picked = k_center_greedy(points, torch.tensor([[0.0]]), 3, random_state=rs)
    np.testing.assert_array_equal(picked, [4, 2, 1])


@pytest.mark.parametrize("chunk_size", [1, 3, 2048])
def test_k_center_greedy_matches_brute_force(chunk_size):
    rng = np.random.RandomState(1)
    cand = rng.randn(50, 3) * 5 + 20
    centers = rng.randn(7, 3) * 5 + 20
    picked = k_center_greedy(
        torch.tensor(cand),
        torch.tensor(centers),
        12,
        random_state=rng,
        chunk_size=chunk_size,
    )
    np.testing.assert_array_equal(picked, brute_force_k_center(cand, centers, 12))


def test_k_center_greedy_without_centres_starts_at_random():
    cand = torch.tensor(np.random.RandomState(2).randn(30, 2))
    empty = torch.empty(0, 2, dtype=cand.dtype)
    firsts = {
        int(k_center_greedy(cand, empty, 3, random_state=np.random.RandomState(s))[0])
        for s in range(6)
    }
    assert len(firsts) > 1
    a = k_center_greedy(cand, empty, 30, random_state=np.random.RandomState(0))
    b = k_center_greedy(cand, empty, 30, random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == list(range(30))


def test_k_center_greedy_duplicates_still_distinct():
    cand = torch.zeros(5, 2)
    picked = k_center_greedy(
        cand, torch.zeros(1, 2), 5, random_state=np.random.RandomState(0)
    )
    assert sorted(picked) == list(range(5))


def previous_k_center_greedy(candidates, centers, n, chunk_size=2048):
    """skal's k-center greedy before the lazy version (kept as the reference).

    Eager: every step updates all N nearest-centre distances with one
    matrix-vector product, in the dtype of the input.
    """
    mean = candidates.mean(0, keepdim=True)
    candidates = candidates - mean
    centers = centers - mean
    sq_norms = (candidates * candidates).sum(1)
    center_sq = (centers * centers).sum(1)
    min_dist = torch.empty_like(sq_norms)
    for start in range(0, candidates.shape[0], chunk_size):
        block = candidates[start : start + chunk_size]
        dist = sq_norms[start : start + chunk_size, None] + center_sq[None]
        dist = dist - 2.0 * (block @ centers.T)
        min_dist[start : start + chunk_size] = dist.amin(1).clamp_(min=0.0)
    picked = np.empty(n, dtype=np.intp)
    for step in range(n):
        idx = int(min_dist.argmax())
        picked[step] = idx
        dist = torch.addmv(sq_norms, candidates, candidates[idx], alpha=-2.0)
        dist.add_(sq_norms[idx]).clamp_(min=0.0)
        torch.minimum(min_dist, dist, out=min_dist)
        min_dist[idx] = -1.0
    return picked


@pytest.mark.parametrize(
    "seed, n_cand, dim, n_lab, n",
    [(0, 3000, 64, 200, 300), (1, 1500, 130, 1000, 150), (2, 700, 8, 5, 700)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k_center_greedy_picks_as_the_previous_version(
    seed, n_cand, dim, n_lab, n, dtype
):
    # non-negative, off-centre embeddings, as after a ReLU; clusters of
    # different spreads so that new centres change some distances and not
    # others
    rng = np.random.RandomState(seed)
    means = rng.rand(10, dim) * 3
    scale = rng.rand(10)[:, None] * 2
    which = rng.randint(10, size=n_cand + n_lab)
    points = np.maximum(means[which] + scale[which] * rng.randn(len(which), dim), 0)
    points = torch.tensor(points, dtype=dtype)
    cand, lab = points[:n_cand], points[n_cand:]
    picked = k_center_greedy(cand, lab, n, random_state=np.random.RandomState(0))
    # the reference in float64 on the same (float32-valued) numbers
    expected = previous_k_center_greedy(cand.double(), lab.double(), n)
    np.testing.assert_array_equal(picked, expected)


@pytest.mark.parametrize("seed", range(5))
def test_k_center_greedy_resolves_float32_near_ties_exactly(seed):
    # two far candidates whose squared distances to the only centre differ by
    # about 1e-7 relative, below float32's rounding of a 256-term sum, among
    # candidates near the centre; the exact answer is the farther one
    rng = np.random.RandomState(seed)
    v = rng.rand(256) + 1.0
    far = np.stack([v, v[::-1].copy()])
    far[1, 0] += 1e-7 * (v @ v) / (2 * v[-1])
    x = np.concatenate([rng.rand(300, 256) * 0.01, far])
    x = x.astype(np.float32)
    d = (x.astype(np.float64) ** 2).sum(1)
    farther = 300 + int(np.argmax(d[300:]))
    assert abs(d[300] - d[301]) / d[300] < 1e-6  # a genuine near-tie
    centre = torch.zeros(1, 256)
    picked = k_center_greedy(
        torch.tensor(x), centre, 1, random_state=np.random.RandomState(0)
    )
    assert picked[0] == farther
    expected = previous_k_center_greedy(torch.tensor(x).double(), centre.double(), 1)
    assert expected[0] == farther


def test_k_center_greedy_float16_is_exact_on_the_rounded_embeddings():
    rng = np.random.RandomState(3)
    cand = torch.tensor(rng.randn(400, 20)).half()
    lab = torch.tensor(rng.randn(30, 20)).half()
    picked = k_center_greedy(cand, lab, 40, random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(
        picked, brute_force_k_center(cand.double(), lab.double(), 40)
    )


def test_coreset_float16_embeddings(data, fitted):
    _, _, X_pool, _ = data
    net = fitted.estimator_
    h_pool = torch.tensor(net.embed(X_pool)).half().double()
    h_lab = torch.tensor(net.embed(fitted.X_labeled_)).half().double()
    strategy = skal.strategies.CoreSet(embedding_dtype="float16")
    np.testing.assert_array_equal(
        learner_with(fitted, strategy).query(X_pool, n=8),
        brute_force_k_center(h_pool, h_lab, 8),
    )


def test_coreset_rejects_bad_embedding_dtype(data, fitted):
    learner = learner_with(fitted, skal.strategies.CoreSet(embedding_dtype="int8"))
    with pytest.raises(
        ValueError, match="'embedding_dtype' parameter of CoreSet must be .*'int8'"
    ):
        learner.query(data[2], n=2)


@pytest.mark.parametrize("kind", ["class form", "imbalanced", "signed", "any rows"])
def test_kmeans_pp_gradient_on_float16_embeddings_is_float32_on_rounded_ones(kind):
    # h stored in float16 (BADGE's embedding_dtype="float16"), read in
    # float32 where it is used: the picks of float32 on the rounded values
    if kind == "any rows":
        rng = np.random.RandomState(6)
        a, h = torch.tensor(rng.randn(2000, 8)), torch.tensor(rng.randn(2000, 16))
    elif kind == "imbalanced":
        a, h = imbalanced_badge_factors(3000, 12, 24)
    else:
        a, h = badge_factors(3000, 12, 24, 1.0, signed=kind == "signed")
    a, h16 = a.float(), (h * 300.0).half()  # entries beyond float16's 256**2
    picked = kmeans_pp_gradient(a, h16, 150, random_state=np.random.RandomState(5))
    expected = previous_kmeans_pp_gradient(
        a, h16.float(), 150, np.random.RandomState(5)
    )
    np.testing.assert_array_equal(picked, expected)


def test_dense_seeding_on_float16_embeddings():
    a, h = badge_factors(1500, 10, 32, 1.0)
    a, h16 = a.float(), (h * 300.0).half()
    dense = _GradientSeeding(a, h16, bounds=False).run_dense(
        120, np.random.RandomState(3)
    )
    expected = previous_kmeans_pp_gradient(
        a, h16.float(), 120, np.random.RandomState(3)
    )
    np.testing.assert_array_equal(dense, expected)


def test_badge_float16_embeddings(data, fitted):
    X_lab, y_lab, X_pool, _ = data
    net = fitted.estimator_

    def context():
        return QueryContext(net, net.classes_, X_lab, y_lab, np.random.RandomState(0))

    a, h = gradient_embedding_factors(context(), X_pool)
    a16, h16 = gradient_embedding_factors(context(), X_pool, dtype=torch.float16)
    assert h16.dtype == torch.float16 and a16.dtype == a.dtype
    assert torch.equal(h16, h.half()) and torch.equal(a16, a)
    picked = skal.strategies.BADGE(embedding_dtype="float16").select(
        context(), X_pool, 10
    )
    expected = previous_kmeans_pp_gradient(a, h16.float(), 10, np.random.RandomState(0))
    np.testing.assert_array_equal(picked, expected)
    # the default keeps the network's float32 embeddings
    np.testing.assert_array_equal(
        skal.strategies.BADGE().select(context(), X_pool, 10),
        previous_kmeans_pp_gradient(a, h, 10, np.random.RandomState(0)),
    )


def test_badge_checks_float16_products_before_its_forward_pass(
    data, fitted, monkeypatch
):
    # the check's 32 MiB matrix is gone before the factors take memory
    calls = []
    probe = diversity._half_products_accumulate_in_float32
    factors = diversity.gradient_embedding_factors

    def probe_logged(dim):
        calls.append(("probe", dim))
        return probe(dim)

    def factors_logged(*args, **kwargs):
        calls.append(("factors",))
        return factors(*args, **kwargs)

    monkeypatch.setattr(diversity, "_half_products_accumulate_in_float32", probe_logged)
    monkeypatch.setattr(diversity, "gradient_embedding_factors", factors_logged)
    X_lab, y_lab, X_pool, _ = data
    net = fitted.estimator_
    context = QueryContext(net, net.classes_, X_lab, y_lab, np.random.RandomState(0))
    skal.strategies.BADGE().select(context, X_pool, 5)
    assert calls[:2] == [("probe", _blocks._PROBE_COLUMNS), ("factors",)]


def test_badge_rejects_bad_embedding_dtype(data, fitted):
    learner = learner_with(fitted, skal.strategies.BADGE(embedding_dtype="int8"))
    with pytest.raises(
        ValueError, match="'embedding_dtype' parameter of BADGE must be .*'int8'"
    ):
        learner.query(data[2], n=2)


def test_coreset_uses_the_penultimate_embedding(data, fitted):
    _, _, X_pool, _ = data
    net = fitted.estimator_
    expected = brute_force_k_center(net.embed(X_pool), net.embed(fitted.X_labeled_), 8)
    np.testing.assert_array_equal(
        learner_with(fitted, "coreset").query(X_pool, n=8), expected
    )


def test_coreset_and_badge_on_a_non_network_classifier(data):
    X, y, X_pool, _ = data
    learner = skal.ActiveLearner(LogisticRegression(), "coreset").fit(X, y)
    np.testing.assert_array_equal(
        learner.query(X_pool, n=6), brute_force_k_center(X_pool, X, 6)
    )
    learner = skal.ActiveLearner(LogisticRegression(), "badge", random_state=0)
    assert len(np.unique(learner.fit(X, y).query(X_pool, n=6))) == 6


def test_coreset_rejects_bad_chunk_size(data, fitted):
    learner = learner_with(fitted, skal.strategies.CoreSet(chunk_size=0))
    with pytest.raises(
        ValueError, match=r"'chunk_size' parameter of CoreSet .* \[1, inf\); got 0"
    ):
        learner.query(data[2], n=2)


# --------------------------------------------------------------------- BADGE
def test_badge_embedding_equals_autograd_last_layer_gradient(data, fitted):
    _, _, X_pool, _ = data
    net = fitted.estimator_
    X_small = X_pool[:7]
    context = fitted._context()
    a, h = gradient_embedding_factors(context, X_small)
    g = (a[:, :, None] * h[:, None, :]).reshape(len(X_small), -1)
    last = net.module_.layers[-1]
    net.module_.eval()
    for i in range(len(X_small)):
        logits = net.module_(torch.as_tensor(X_small[i : i + 1]))
        y_hat = logits.argmax(1)
        loss = nn.functional.cross_entropy(logits, y_hat)
        grad_w, grad_b = torch.autograd.grad(loss, [last.weight, last.bias])
        torch.testing.assert_close(g[i], grad_w.flatten(), rtol=1e-5, atol=1e-6)
        # the bias gradient is a itself; like Ash et al.'s code, BADGE leaves it out
        torch.testing.assert_close(a[i], grad_b, rtol=1e-5, atol=1e-6)


def naive_kmeans_pp(g, n, random_state):
    """BADGE's seeding on the full gradient matrix, same draw protocol."""
    g = np.asarray(g, dtype=float)
    picked = [int(np.argmax((g**2).sum(1)))]
    min_dist = ((g - g[picked[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        min_dist[picked] = 0.0
        cumsum = np.cumsum(min_dist)
        target = random_state.random_sample() * cumsum[-1]
        idx = int(np.searchsorted(cumsum, target, side="right"))
        picked.append(idx)
        min_dist = np.minimum(min_dist, ((g - g[idx]) ** 2).sum(1))
    return np.array(picked)


def test_badge_factored_distances_match_full_gradient_matrix():
    rng = np.random.RandomState(3)
    logits = torch.tensor(rng.randn(80, 4))
    a = torch.softmax(logits, 1)
    a[torch.arange(80), a.argmax(1)] -= 1
    h = torch.tensor(rng.randn(80, 5))
    g = (a[:, :, None] * h[:, None, :]).reshape(80, -1)
    picked = kmeans_pp_gradient(a, h, 20, random_state=np.random.RandomState(4))
    expected = naive_kmeans_pp(g.numpy(), 20, np.random.RandomState(4))
    np.testing.assert_array_equal(picked, expected)


def previous_kmeans_pp_gradient(a, h, n, random_state):
    """skal's BADGE seeding before distances were pruned (the reference)."""
    n_samples = a.shape[0]
    g2 = (a * a).sum(1) * (h * h).sum(1)
    min_dist = torch.full_like(g2, float("inf"))
    picked = np.empty(n, dtype=np.intp)
    for step in range(n):
        idx = None
        if step == 0:
            if bool(g2.max() > 0):
                idx = int(g2.argmax())
        else:
            cumsum = min_dist.cumsum(0, dtype=torch.float64)
            total = float(cumsum[-1])
            if total > 0:
                target = torch.tensor(
                    random_state.random_sample() * total,
                    dtype=torch.float64,
                    device=cumsum.device,
                )
                idx = int(torch.searchsorted(cumsum, target, right=True))
        if idx is None:
            rest = np.setdiff1d(np.arange(n_samples), picked[:step])
            idx = int(rest[random_state.randint(len(rest))])
        picked[step] = idx
        dist = torch.addcmul(g2, a @ a[idx], h @ h[idx], value=-2.0)
        dist.add_(g2[idx]).clamp_(min=0.0)
        torch.minimum(min_dist, dist, out=min_dist)
        min_dist[idx] = 0.0
    return picked


def badge_factors(n, n_classes, dim, sharpness, *, signed=False, seed=5):
    """BADGE's factors for random predictions and embeddings."""
    rng = np.random.RandomState(seed)
    a = torch.softmax(torch.tensor(rng.randn(n, n_classes) * sharpness), 1)
    a[torch.arange(n), a.argmax(1)] -= 1
    h = rng.randn(n, dim)
    return a, torch.tensor(h if signed else np.maximum(h, 0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sharpness", [0.3, 3.0])
@pytest.mark.parametrize("signed", [False, True])
def test_kmeans_pp_gradient_picks_as_the_previous_version(dtype, sharpness, signed):
    # flat and confident predictions over 30 classes: with confident ones
    # most distances cannot shrink and are skipped; signed embeddings (no
    # ReLU) are pruned by |h.h'| only
    a, h = badge_factors(4000, 30, 64, sharpness, signed=signed)
    a, h = a.to(dtype), h.to(dtype)
    picked = kmeans_pp_gradient(a, h, 200, random_state=np.random.RandomState(1))
    expected = previous_kmeans_pp_gradient(a, h, 200, np.random.RandomState(1))
    np.testing.assert_array_equal(picked, expected)


def test_kmeans_pp_gradient_on_rows_of_any_sign_as_the_previous_version():
    # rows with several negative entries have no class structure to bound by
    rng = np.random.RandomState(6)
    a, h = torch.tensor(rng.randn(3000, 8)), torch.tensor(rng.randn(3000, 16))
    assert not _has_class_form(a)
    picked = kmeans_pp_gradient(a, h, 100, random_state=np.random.RandomState(2))
    expected = previous_kmeans_pp_gradient(a, h, 100, np.random.RandomState(2))
    np.testing.assert_array_equal(picked, expected)


def imbalanced_badge_factors(n, n_classes, dim, *, signed=False, seed=8):
    """Factors whose predicted classes are far from balanced (as from an
    untrained net): a few classes hold most rows, one class a single row,
    and a few rows put all their probability on one class (a = 0)."""
    rng = np.random.RandomState(seed)
    logits = rng.randn(n, n_classes) + np.linspace(2.0, 0.0, n_classes)
    a = torch.softmax(torch.tensor(logits * 0.7), 1)
    a[torch.arange(n), a.argmax(1)] -= 1
    a[:5] = 0.0
    a[5] = torch.softmax(torch.tensor(rng.randn(n_classes)), 0)
    a[5, -1] -= 1.0  # the only row of the last class
    h = rng.randn(n, dim)
    return a, torch.tensor(h if signed else np.maximum(h, 0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("half", [True, False])
def test_class_sorted_seeding_picks_as_the_previous_version(
    dtype, signed, half, monkeypatch
):
    # blocks of rows skipped at once, rows tested one by one, and whole
    # passes, over classes of very different sizes; half: rows of the new
    # point's class prefiltered through float16 copies (where float16
    # products accumulate in float32, as checked at run time), or not
    assert _half_products_accumulate_in_float32(48)
    if not half:
        monkeypatch.setattr(
            _kmeanspp, "_half_products_accumulate_in_float32", lambda *_: False
        )
    a, h = imbalanced_badge_factors(6000, 25, 48, signed=signed)
    a, h = a.to(dtype), h.to(dtype)
    expected = previous_kmeans_pp_gradient(a, h, 300, np.random.RandomState(2))
    seeding = _kmeanspp._ClassSortedSeeding(a, h)
    assert (seeding.half is not None) == half
    picked = seeding.run(300, np.random.RandomState(2))
    np.testing.assert_array_equal(picked, expected)


def test_class_sorted_seeding_gathers_rows_in_parts_with_the_same_picks(monkeypatch):
    # exact distances gathered _ROWS rows at a time (a whole class can need
    # them): parts of 37 rows over classes of hundreds give the same picks
    monkeypatch.setattr(_blocks, "_ROWS", 37)
    monkeypatch.setattr(
        _kmeanspp, "_half_products_accumulate_in_float32", lambda *_: False
    )
    a, h = imbalanced_badge_factors(3000, 12, 20)
    expected = previous_kmeans_pp_gradient(a, h, 120, np.random.RandomState(4))
    seeding = _kmeanspp._ClassSortedSeeding(a, h)
    assert int(seeding.class_count.max()) > 10 * _blocks._ROWS
    picked = seeding.run(120, np.random.RandomState(4))
    np.testing.assert_array_equal(picked, expected)


def test_kmeans_pp_gradient_leaves_its_inputs_unchanged():
    a, h = imbalanced_badge_factors(1000, 10, 8)
    a0, h0 = a.clone(), h.clone()
    kmeans_pp_gradient(a, h, 50, random_state=np.random.RandomState(0))
    assert torch.equal(a, a0) and torch.equal(h, h0)


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 1e6])
def test_half_rows_products_lie_within_their_error_bound(scale):
    # rows of very different norms (some all zero, some with entries in
    # float16's subnormal range after scaling), against float64 products
    rng = np.random.RandomState(4)
    x = rng.randn(3000, 64) * np.exp(rng.uniform(-8, 3, size=(3000, 1)))
    x[:10] = 0.0
    x[10:20, :60] = 0.0
    x = torch.tensor(x * scale, dtype=torch.float32)
    norms = x.double().norm(dim=1).float()
    order = torch.from_numpy(rng.permutation(3000))
    half = _HalfRows(x, norms[order], order)
    exact = x.double()[order]
    for p in (0, 15, 100, 2999):
        value, err = (v / half.scale**2 for v in half.products(0, 3000, p))
        true = exact @ exact[p]
        assert bool(((value - true).abs() <= err).all())
        magnitude = half.magnitude(0, 3000, p) / half.scale**2
        assert bool((true.abs() <= magnitude).all())
        # and not vacuous: within a few thousandths of |x||x'|
        big = exact.norm(dim=1) * exact[p].norm()
        assert bool((err <= 0.01 * big + 1e-6 * big.max()).all())


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("sharpness", [0.0, 0.3, 3.0, 30.0])
def test_cross_class_bounds_enclose_the_inner_products(sharpness, signed):
    a, h = badge_factors(600, 12, 4, sharpness, signed=signed, seed=7)
    a = a.float()
    # a row with every probability on one class: a = 0 and no negative entry
    a[0] = 0.0
    seeding = _kmeanspp._ClassSortedSeeding(a, h.float())
    sa = seeding.a.double()[seeding.order]  # in the seeding's order
    classes = torch.as_tensor(seeding.b_class)[seeding.row_block]
    blocks = seeding.row_block
    for p in (0, 1, 17, 599):
        rows = torch.nonzero(classes != classes[p]).flatten()
        exact = sa[rows] @ sa[p]
        # the bound of a.a' as it enters the distance, for each row (times its
        # |h|) and for its block (times the block's largest |h|-weighted one)
        h_norm = seeding.h_norm[rows].double()
        per_row = seeding._row_coupling(p, rows)
        per_block = seeding._block_coupling(p)[blocks[rows]]
        coupling = (exact.abs() if signed else exact.clamp(min=0.0)) * h_norm
        norms = sa.norm(dim=1)
        tol = 1e-5 * norms[rows] * norms[p] * h_norm + torch.finfo(torch.float32).tiny
        assert bool((coupling <= per_row + tol).all())
        assert bool((coupling <= per_block + tol).all())
        if sharpness > 0:
            # not vacuous: far below |a||a'| for most rows
            loose = norms[rows] * norms[p] * h_norm
            assert float((per_row < 0.5 * loose).double().mean()) > 0.5


def test_dense_seeding_picks_as_the_pruned_one():
    # the loop used on GPUs (every distance, no wait for the device)
    a, h = badge_factors(2000, 10, 32, 1.0)
    expected = kmeans_pp_gradient(a, h, 150, random_state=np.random.RandomState(3))
    dense = _GradientSeeding(a, h, bounds=False).run_dense(
        150, np.random.RandomState(3)
    )
    np.testing.assert_array_equal(dense, expected)


def test_dense_seeding_leaves_all_zero_distances_to_the_step_by_step_loop():
    # three distinct points: after three picks every distance is zero, and
    # the step-by-step loop draws the rest uniformly
    a = torch.tensor([[0.5, -0.5], [-0.3, 0.3], [0.2, -0.2]]).repeat(4, 1)
    h = torch.tensor([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0]]).repeat(4, 1)
    seeding = _GradientSeeding(a, h, bounds=False)
    assert seeding.run_dense(6, np.random.RandomState(0)) is None
    picked = seeding.run(6, np.random.RandomState(0))
    assert len(set(picked)) == 6
    assert {i % 3 for i in picked[:3]} == {0, 1, 2}


def test_badge_all_zero_gradients_fall_back_to_uniform():
    a = torch.zeros(10, 3)
    h = torch.randn(10, 4)
    picked = kmeans_pp_gradient(a, h, 10, random_state=np.random.RandomState(0))
    assert sorted(picked) == list(range(10))


def test_badge_seeding_depends_on_random_state(data, fitted):
    _, _, X_pool, _ = data
    a, h = gradient_embedding_factors(fitted._context(), X_pool)
    runs = [
        tuple(kmeans_pp_gradient(a, h, 10, random_state=np.random.RandomState(s)))
        for s in (0, 0, 1)
    ]
    assert runs[0] == runs[1] != runs[2]
    assert runs[0][0] == runs[2][0]  # the first point is the largest gradient


# ---------------------------------------------------------------------- BALD
def test_mutual_information_on_fixed_mc_probabilities():
    probs = torch.tensor(
        [
            [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.7, 0.2, 0.1]],
            [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.1, 0.2, 0.7]],
        ]
    )

    def h(p):
        return -sum(x * math.log(x) for x in p if x > 0)

    expected = [
        0.0,  # the passes agree
        math.log(2),  # confident passes that disagree
        h([0.4, 0.2, 0.4]) - (h([0.7, 0.2, 0.1]) + h([0.1, 0.2, 0.7])) / 2,
    ]
    np.testing.assert_allclose(mutual_information(probs).numpy(), expected, atol=1e-7)
    assert abs(expected[2] - 0.2531) < 1e-4


def test_bald_requires_dropout(data, fitted):
    X, y, X_pool, _ = data
    learner = skal.ActiveLearner(make_net(module__dropout=0.0, max_epochs=1), "bald")
    with pytest.raises(ValueError, match="needs dropout layers.*module__dropout"):
        learner.fit(X, y)
    without = learner_with(fitted, "bald")
    without.estimator_.module_ = nn.Sequential(nn.Linear(6, 3))
    with pytest.raises(ValueError, match="needs dropout layers"):
        without.utility(X_pool)


def test_bald_requires_a_network(data):
    X, y, _, _ = data
    learner = skal.ActiveLearner(LogisticRegression(), "bald")
    with pytest.raises(TypeError, match="needs a neural network"):
        learner.fit(X, y)


def test_bald_rejects_bad_n_passes(data, fitted):
    with pytest.raises(
        ValueError, match=r"'n_passes' parameter of BALD .* \[1, inf\); got 0"
    ):
        learner_with(fitted, BALD(n_passes=0)).utility(data[2])


class DropoutBN(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5)
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def test_bald_enables_only_dropout_and_restores_modes(data):
    X, y, X_pool, _ = data
    learner = skal.ActiveLearner(
        skal.NeuralNetClassifier(DropoutBN, max_epochs=2), "bald", random_state=0
    ).fit(X, y)
    module = learner.estimator_.module_
    module.train()
    module.body[3].eval()  # a mixed state that must come back as it was
    modes = {name: m.training for name, m in module.named_modules()}
    bn = module.body[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked)
    twin = learner_with(learner, "bald")
    u = learner.utility(X_pool)
    assert {name: m.training for name, m in module.named_modules()} == modes
    torch.testing.assert_close(bn.running_mean, stats[0], rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, stats[1], rtol=0, atol=0)
    assert int(bn.num_batches_tracked) == int(stats[2])
    assert (u >= 0).all() and (u > 1e-6).mean() > 0.5  # dropout was active
    np.testing.assert_array_equal(u, twin.utility(X_pool))


def test_bald_matches_manual_mc_dropout(data):
    X, y, X_pool, _ = data
    learner = skal.ActiveLearner(
        make_net(batch_size=1000), BALD(n_passes=4), random_state=0
    ).fit(X, y)
    module = learner.estimator_.module_
    state = pickle.loads(pickle.dumps(learner.random_state_))
    u = learner.utility(X_pool)
    seed = skal._utils.draw_seed(state)
    with skal._utils.torch_seed(seed), torch.no_grad():
        module.train()
        net = learner.estimator_
        # the data loader draws its base seed from torch's generator first
        ((x, _),) = list(net.get_iterator(net.get_dataset(X_pool), training=False))
        probs = torch.stack([torch.softmax(module(x), 1) for _ in range(4)])
        module.eval()
    np.testing.assert_allclose(u, mutual_information(probs).numpy(), atol=1e-6)


# ---------------------------------------------------------------------- ALBL
def test_exp4p_probabilities_and_update_by_hand():
    p = exp4p_probabilities([0.0, 0.0], 0.1)
    np.testing.assert_allclose(p, [0.5, 0.5])
    # reward 0.8 for arm 0 drawn with p = 0.5: r_hat = [1.6, 0], v_hat = [2, 2],
    # bonus = sqrt(ln(2 / 0.1) / (2 * 1)); l += 0.1 / 2 * (r_hat + v_hat * bonus)
    bonus = math.sqrt(math.log(20) / 2)
    expected = [0.05 * (1.6 + 2 * bonus), 0.05 * (2 * bonus)]
    new = exp4p_update([0.0, 0.0], p, 0, 0.8, p_min=0.1, delta=0.1, horizon=1)
    np.testing.assert_allclose(new, expected)
    np.testing.assert_allclose(new, [0.20239, 0.12239], atol=1e-5)
    w = np.exp(new) / np.exp(new).sum()
    np.testing.assert_allclose(exp4p_probabilities(new, 0.1), 0.8 * w + 0.1)


class FixedClassifier:
    """Predicts class 1 for rows whose first feature is positive."""

    classes_ = np.array([0, 1])

    def predict_proba(self, X):
        pos = (np.asarray(X)[:, 0] > 0).astype(float)
        return np.column_stack([1 - pos, pos])


def test_albl_reward_is_importance_weighted_accuracy():
    albl = ALBL(["least_confidence", "random"], p_min=0.1, delta=0.1, horizon=3)
    albl._initialize()
    albl.probabilities_ = np.array([0.25, 0.75])
    albl.pending_arm_ = 1
    # earlier query through arm 0 (p = 0.25): one row, predicted wrong
    albl.queried_rows_ = np.array([1])
    albl.importance_weights_ = np.array([4.0])
    X_lab = np.array([[1.0], [-1.0], [1.0], [-1.0], [1.0]])
    y_lab = np.array([1, 1, 1, 0, 0])  # rows 3, 4 are new: one right, one wrong
    context = QueryContext(
        FixedClassifier(), [0, 1], X_lab, y_lab, np.random.RandomState(0)
    )
    albl.on_teach(context, X_lab[3:], y_lab[3:])
    w = 1 / 0.75
    reward = (0 * 4.0 + 1 * w + 0 * w) / (4.0 + 2 * w)
    bonus = math.sqrt(math.log(2 / 0.1) / (2 * 3))
    expected = 0.05 * (np.array([0, reward / 0.75]) + np.array([4, 1 / 0.75]) * bonus)
    np.testing.assert_allclose(albl.log_weights_, expected)
    assert albl.reward_history_ == [pytest.approx(reward)]
    assert albl.arm_history_ == [1]
    np.testing.assert_array_equal(albl.queried_rows_, [1, 3, 4])
    assert albl.pending_arm_ is None


def test_albl_state_survives_teach_and_pickling(data):
    X, y, X_pool, y_pool = data
    strategy = ALBL(["least_confidence", "random"])
    learner = skal.ActiveLearner(LogisticRegression(), strategy, random_state=0)
    learner.fit(X, y)
    for _ in range(2):
        idx = learner.query(X_pool, n=5)
        learner.teach(X_pool[idx], y_pool[idx])
    idx = learner.query(X_pool, n=5)
    copy = pickle.loads(pickle.dumps(learner))
    for lrn in (learner, copy):
        lrn.teach(X_pool[idx], y_pool[idx])
    state, restored = learner.strategy_, copy.strategy_
    assert len(state.reward_history_) == 3
    assert len(state.queried_rows_) == 15
    np.testing.assert_array_equal(state.log_weights_, restored.log_weights_)
    assert not np.allclose(state.log_weights_, 0)
    assert strategy.__dict__.keys() == clone(strategy).__dict__.keys()  # untouched
    # teaching without a query leaves the bandit as it was
    before = state.log_weights_.copy()
    learner.teach(X_pool[:3], y_pool[:3])
    np.testing.assert_array_equal(state.log_weights_, before)
    # a new fit starts afresh
    assert not hasattr(learner.fit(X, y).strategy_, "log_weights_")


def test_albl_accepts_strategy_objects_and_clones_them(data):
    X, y, X_pool, _ = data
    arm = skal.strategies.CoreSet(chunk_size=7)
    learner = skal.ActiveLearner(
        LogisticRegression(), ALBL([arm, "margin"]), random_state=0
    ).fit(X, y)
    assert len(np.unique(learner.query(X_pool, n=4))) == 4
    arms = learner.strategy_.strategies_
    assert arms[0] is not arm and arms[0].get_params() == arm.get_params()
    assert type(arms[1]).__name__ == "MarginSampling"


@pytest.mark.parametrize(
    "params, match",
    [
        (
            {"strategies": "coreset"},
            "'strategies' parameter of ALBL must be an instance of list or tuple; "
            "got 'coreset' of type str",
        ),
        ({"strategies": []}, "at least one"),
        ({"delta": 1.5}, r"'delta' parameter of ALBL .* \(0, 1\); got 1.5"),
        ({"p_min": 0.9}, r"p_min must be None or in \[0, 1/2\] for 2 strategies"),
        ({"horizon": 0}, "'horizon' parameter of ALBL"),
        ({"strategies": ["margin", "nope"]}, "'nope' is not a registered strategy"),
        ({"strategies": ["bald"]}, "needs a neural network"),
    ],
)
def test_albl_rejects_bad_parameters(data, params, match):
    X, y, _, _ = data
    learner = skal.ActiveLearner(LogisticRegression(), ALBL(**params))
    with pytest.raises((ValueError, TypeError), match=match):
        learner.fit(X, y)


# ---------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "strategy",
    ["least_confidence", "margin", "entropy", "coreset", "badge", "dynamic_al"],
)
def test_strategies_pick_on_cuda_as_on_cpu(data, fitted, strategy):
    """Same weights on the GPU: the same picks (the device path of each
    strategy, BADGE's dense seeding included)."""
    _, _, X_pool, _ = data
    on_cpu = learner_with(fitted, strategy)
    on_gpu = learner_with(fitted, strategy)
    on_gpu.estimator_.set_params(device="cuda")
    on_gpu.estimator_.module_.to("cuda")
    assert next(on_gpu.estimator_.module_.parameters()).is_cuda
    picked = on_gpu.query(X_pool, 20)
    np.testing.assert_array_equal(picked, on_cpu.query(X_pool, 20))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("cls", "strategy", "layers"),
    [
        (skal.TiDALClassifier, "tidal", "tidal_layers"),
        (skal.LLossClassifier, "lloss", "lloss_layers"),
    ],
)
def test_head_nets_train_and_query_on_cuda(data, cls, strategy, layers):
    X, y, X_pool, _ = data
    net = cls(
        skal.nets.MLP,
        module__hidden_units=(16,),
        max_epochs=3,
        batch_size=32,
        device="cuda",
        **{layers: ["layers.1"]},
    )
    learner = skal.ActiveLearner(net, strategy=strategy, random_state=0).fit(X, y)
    assert all(p.is_cuda for p in learner.estimator_.module_.parameters())
    picked = learner.query(X_pool, 10)
    assert len(set(picked.tolist())) == 10
    learner.teach(X_pool[picked], np.zeros(10, dtype=int))
    if strategy == "tidal":
        dynamics = learner.estimator_.predict_dynamics(X_pool)
        np.testing.assert_allclose(dynamics.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_k_center_picks_as_the_lazy_one(dtype):
    # the loop used on GPUs, run on the CPU
    rng = np.random.RandomState(8)
    x = torch.tensor(rng.randn(3000, 24) + 5.0, dtype=dtype)
    centres = torch.tensor(rng.randn(40, 24) + 5.0, dtype=dtype)
    dense = _LazyKCenter(x, centres, 100, 512).run_dense(100)
    lazy = k_center_greedy(x, centres, 100, random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(dense, lazy)
    expected = previous_k_center_greedy(x.double(), centres.double(), 100)
    np.testing.assert_array_equal(dense, expected)


def test_dense_k_center_settles_near_ties_as_the_lazy_loop():
    # exact ties (duplicates) go to the lowest index, in float64
    x = torch.tensor([[0.0, 3.0], [3.0, 0.0], [3.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    centres = torch.zeros(1, 2)
    dense = _LazyKCenter(x, centres, 3, 16).run_dense(3)
    lazy = k_center_greedy(x, centres, 3, random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(dense, lazy)
    np.testing.assert_array_equal(dense, [0, 1, 3])
    # more near-ties than a step settles, or no labelled centre: the lazy loop
    many = torch.ones(_NEAR_TIES + 2, 2)
    assert _LazyKCenter(many, centres, 2, 16).run_dense(2) is None
    assert _LazyKCenter(x, x[:0], 2, 16).run_dense(2) is None


def test_float16_prefilter_is_off_where_float16_may_accumulate_in_float16(
    monkeypatch,
):
    # PyTorch's switch for float16 reductions on the CPU (where it exists)
    # turns the prefilter off, and BADGE's seeding uses float32 products
    probe = _blocks._half_products_accumulate_in_float32
    assert probe(48)
    name = "_get_cpu_allow_fp16_reduced_precision_reduction"
    if not hasattr(torch._C, name):
        pytest.skip("this torch has no CPU float16 reduced-precision switch")
    monkeypatch.setattr(torch._C, name, lambda: True)
    assert not probe(48)
    a, h = imbalanced_badge_factors(500, 5, 8)
    assert _kmeanspp._ClassSortedSeeding(a, h).half is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kmeans_pp_gradient_to_the_last_sample_with_duplicates(dtype):
    # every sample picked (the last draws are uniform among the rest, all
    # distances being zero), rows repeated four times, reduced precision
    a, h = badge_factors(75, 5, 8, 1.0, seed=2)
    a, h = a.repeat(4, 1).to(dtype), h.repeat(4, 1).to(dtype)
    picked = kmeans_pp_gradient(a, h, 300, random_state=np.random.RandomState(0))
    # float16 and bfloat16 factors are computed in float32
    expected = previous_kmeans_pp_gradient(
        a.float(), h.float(), 300, np.random.RandomState(0)
    )
    np.testing.assert_array_equal(picked, expected)
    assert sorted(picked) == list(range(300))
