"""Uncertainty baselines against hand-computed values on fixed probabilities."""

import numpy as np
import pytest

import skal
from skal.strategies import (
    EntropySampling,
    LeastConfidence,
    MarginSampling,
    QueryContext,
    RandomSampling,
    top_n,
)

PROBA = np.array(
    [
        [1.0, 0.0, 0.0],  # certain; zeros must not give NaN entropy
        [0.5, 0.5, 0.0],  # tie between two classes
        [0.4, 0.35, 0.25],
        [0.6, 0.3, 0.1],
        [1 / 3, 1 / 3, 1 / 3],  # maximally uncertain
    ]
)


class FixedProba:
    """A 'classifier' whose probabilities for row i are PROBA[i]."""

    classes_ = np.array([0, 1, 2])

    def predict_proba(self, X):
        return PROBA[np.asarray(X)[:, 0].astype(int)]


def _context(estimator=None, n_classes=3, seed=0):
    return QueryContext(
        estimator=estimator or FixedProba(),
        classes=np.arange(n_classes),
        X_labeled=np.zeros((0, 1)),
        y_labeled=np.zeros(0, dtype=int),
        random_state=np.random.RandomState(seed),
    )


X = np.arange(len(PROBA)).reshape(-1, 1)


def test_least_confidence():
    expected = [0.0, 0.5, 0.6, 0.4, 2 / 3]
    np.testing.assert_allclose(LeastConfidence().utility(_context(), X), expected)


def test_margin():
    expected = [1 - 1.0, 1 - 0.0, 1 - 0.05, 1 - 0.3, 1 - 0.0]
    np.testing.assert_allclose(MarginSampling().utility(_context(), X), expected)


def test_entropy():
    def h(p):
        p = np.asarray([v for v in p if v > 0])
        return -(p * np.log(p)).sum()

    expected = [h(p) for p in PROBA]
    u = EntropySampling().utility(_context(), X)
    assert np.isfinite(u).all()
    np.testing.assert_allclose(u, expected)
    assert u[0] == 0.0 and np.argmax(u) == 4


@pytest.mark.parametrize(
    "strategy, first",
    [(LeastConfidence(), 4), (EntropySampling(), 4), (MarginSampling(), None)],
)
def test_select_is_top_utility(strategy, first):
    idx = strategy.select(_context(), X, 3)
    u = strategy.utility(_context(), X)
    np.testing.assert_array_equal(np.sort(u[idx])[::-1], np.sort(u)[::-1][:3])
    if first is not None:
        assert idx[0] == first
    else:  # margin: rows 1 and 4 tie at the top, in random order
        assert set(idx[:2]) == {1, 4}


def test_unseen_declared_class_gets_zero_probability_column():
    class TwoSeen:
        classes_ = np.array([0, 2])  # class 1 declared but never seen

        def predict_proba(self, X):
            return np.tile([0.7, 0.3], (len(X), 1))

    ctx = _context(TwoSeen())
    np.testing.assert_allclose(ctx.predict_proba(X[:2]), [[0.7, 0, 0.3]] * 2)
    np.testing.assert_allclose(MarginSampling().utility(ctx, X[:2]), [0.6, 0.6])


def test_random_is_uniform_and_reproducible():
    a = RandomSampling().utility(_context(seed=1), np.zeros((1000, 1)))
    b = RandomSampling().utility(_context(seed=1), np.zeros((1000, 1)))
    np.testing.assert_array_equal(a, b)
    assert 0.45 < a.mean() < 0.55 and a.min() >= 0 and a.max() < 1
    picks = [tuple(RandomSampling().select(_context(seed=s), X, 2)) for s in range(20)]
    assert len(set(picks)) > 5


def test_top_n_breaks_ties_at_random_but_reproducibly():
    scores = np.array([1.0, 1.0, 1.0, 0.0, 1.0])
    picks = {tuple(top_n(scores, 2, np.random.RandomState(s))) for s in range(30)}
    assert len(picks) > 3 and all(3 not in p for p in picks)
    assert tuple(top_n(scores, 2, np.random.RandomState(7))) == tuple(
        top_n(scores, 2, np.random.RandomState(7))
    )
    np.testing.assert_array_equal(
        top_n(np.array([0.2, 0.9, 0.5, 0.1]), 4, np.random.RandomState(0)), [1, 2, 0, 3]
    )
    with pytest.raises(ValueError, match="NaN"):
        top_n(np.array([0.1, np.nan]), 1, np.random.RandomState(0))


def _fitted_net_learner(strategy, net_cls=None):
    rng = np.random.RandomState(0)
    X = rng.randn(90, 5).astype(np.float32)
    y = rng.randint(3, size=90)
    net = (net_cls or skal.NeuralNetClassifier)(
        skal.nets.MLP, max_epochs=2, batch_size=16
    )
    learner = skal.ActiveLearner(net, strategy=strategy, random_state=0)
    return learner.fit(X[:30], y[:30]), X[30:]


@pytest.mark.parametrize(
    "strategy, reference",
    [
        ("entropy", lambda p: -(np.where(p > 0, p * np.log(p), 0.0)).sum(1)),
        ("least_confidence", lambda p: 1.0 - p.max(1)),
        ("margin", lambda p: 1.0 - np.diff(np.sort(p, axis=1)[:, -2:], axis=1)[:, 0]),
    ],
)
def test_network_scores_batch_by_batch_equal_scores_of_all_probabilities(
    strategy, reference
):
    # 60 candidates in batches of 16: the scores come from four batches
    learner, X_pool = _fitted_net_learner(strategy)
    proba = learner.estimator_.predict_proba(X_pool).astype(np.float64)
    np.testing.assert_allclose(learner.utility(X_pool), reference(proba), rtol=1e-12)


def test_a_network_with_its_own_predict_proba_is_asked_for_it():
    class Uniform(skal.NeuralNetClassifier):
        def predict_proba(self, X):
            return np.full((len(X), 3), 1 / 3)

    learner, X_pool = _fitted_net_learner("entropy", Uniform)
    np.testing.assert_allclose(learner.utility(X_pool), np.log(3.0))
