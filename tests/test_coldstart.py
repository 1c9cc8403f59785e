"""Label-free first batches, TypiClust, and the simulations' label-free
initial sets, against brute-force references."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import TensorDataset

import skal
from skal.coldstart import LABEL_FREE_METHODS, label_free_embedding, select_label_free
from skal.model_selection import active_learning_curve
from skal.strategies import TypiClust
from skal.strategies.typiclust import typiclust_select
from tests.conftest import make_net


@pytest.fixture(scope="module")
def blobs4():
    X, y = make_blobs(
        n_samples=400, centers=4, cluster_std=0.5, center_box=(-20, 20), random_state=0
    )
    return X, y


def brute_typicality_pick(points, n_neighbors):
    """The point with the smallest mean distance to its nearest others."""
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    k = min(n_neighbors, len(points) // 2)
    return int(np.argmin(np.sort(d, axis=1)[:, :k].mean(1)))


# --------------------------------------------------------- the contract
@pytest.mark.parametrize("method", LABEL_FREE_METHODS)
def test_distinct_reproducible_picks(blobs4, method):
    X, _ = blobs4
    learner = skal.ActiveLearner(LogisticRegression())
    a = select_label_free(learner, X, 12, method=method, random_state=0)
    b = select_label_free(learner, X, 12, method=method, random_state=0)
    assert a.shape == (12,) and a.dtype.kind == "i" and len(np.unique(a)) == 12
    assert 0 <= a.min() and a.max() < len(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["kmeans++", "kcenter", "typiclust"])
def test_every_cluster_is_covered(method):
    # tight blobs: k-means++ draws a second point of a covered blob with
    # probability below 1e-4
    X, y = make_blobs(
        n_samples=400, centers=4, cluster_std=0.05, center_box=(-20, 20), random_state=0
    )
    picks = select_label_free(LogisticRegression(), X, 4, method=method, random_state=1)
    assert sorted(y[picks]) == [0, 1, 2, 3]


def test_kcenter_is_the_textbook_greedy(blobs4):
    X, _ = blobs4
    picks = select_label_free(
        LogisticRegression(), X, 10, method="kcenter", random_state=0
    )
    chosen = [picks[0]]
    dist = np.linalg.norm(X - X[picks[0]], axis=1)
    for _ in range(9):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(X - X[nxt], axis=1))
    np.testing.assert_array_equal(picks, chosen)


def test_kmeans_pp_starts_farthest_from_the_mean_then_draws_by_distance():
    rng = np.random.RandomState(0)
    X = np.r_[rng.randn(50, 2) * 0.01, rng.randn(50, 2) * 0.01 + [10, 0]]
    X = np.r_[X, [[5.0, 30.0]]]
    picks = select_label_free(
        LogisticRegression(), X, 3, method="kmeans++", random_state=0
    )
    assert picks[0] == np.argmax(np.linalg.norm(X - X.mean(0), axis=1)) == 100
    # after the outlier, the D^2 draws take one point of each tight group
    assert sorted(p // 50 for p in picks[1:]) == [0, 1]


def test_typiclust_picks_the_most_typical_point_of_each_cluster(blobs4):
    X, y = blobs4
    picks = select_label_free(
        LogisticRegression(), X, 4, method="typiclust", random_state=0
    )
    for p in picks:
        members = np.flatnonzero(y == y[p])
        assert members[brute_typicality_pick(X[members], 20)] == p


def test_typiclust_goes_to_clusters_without_labels(blobs4):
    X, y = blobs4
    labeled = X[y == 0][:5]
    picks = typiclust_select(X, labeled, 3, random_state=np.random.RandomState(0))
    assert sorted(y[picks]) == [1, 2, 3]


# ------------------------------------------------------------ embeddings
def test_unfitted_network_embedding_is_built_without_training(digits):
    X, _ = digits
    X = X[:300].astype(np.float32)
    learner = skal.ActiveLearner(make_net(), classes=list(range(10)))
    emb = label_free_embedding(learner, X, random_state=0)
    assert emb.shape == (300, 32)  # TinyMLP's hidden width
    np.testing.assert_array_equal(emb, label_free_embedding(learner, X, random_state=0))
    assert not np.allclose(emb, label_free_embedding(learner, X, random_state=1))
    assert not hasattr(learner, "estimator_")
    assert not getattr(learner.estimator, "initialized_", False)
    picks = select_label_free(learner, X, 10, method="kcenter", random_state=0)
    assert len(np.unique(picks)) == 10


def test_fitted_learner_uses_its_trained_embedding(digits):
    X, y = digits
    X = X.astype(np.float32)
    learner = skal.ActiveLearner(make_net(max_epochs=2), random_state=0)
    learner.fit(X[:100], y[:100])
    np.testing.assert_allclose(
        label_free_embedding(learner, X[100:200]), learner.estimator_.embed(X[100:200])
    )


def test_dataset_pool_with_a_network(digits):
    X, _ = digits
    pool = TensorDataset(torch.from_numpy(X[:200].astype(np.float32)))
    learner = skal.ActiveLearner(make_net(), classes=list(range(10)))
    picks = select_label_free(learner, pool, 5, method="typiclust", random_state=0)
    assert len(np.unique(picks)) == 5
    with pytest.raises(TypeError, match="not a network: pass embedding="):
        select_label_free(LogisticRegression(), pool, 5, random_state=0)


def test_unfitted_pipeline_fits_its_earlier_steps_on_the_pool(blobs4):
    X, _ = blobs4
    learner = skal.ActiveLearner(make_pipeline(StandardScaler(), LogisticRegression()))
    np.testing.assert_allclose(
        label_free_embedding(learner, X), StandardScaler().fit_transform(X)
    )


def test_user_given_embedding_array_callable_or_transformer(blobs4):
    X, _ = blobs4
    Z = PCA(2).fit(X)
    learner = skal.ActiveLearner(make_net())
    expected = select_label_free(
        LogisticRegression(), Z.transform(X), 6, method="kcenter", random_state=0
    )
    for embedding in (Z.transform(X), Z.transform, Z):
        got = select_label_free(
            learner, X, 6, method="kcenter", random_state=0, embedding=embedding
        )
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match=r"embedding must be an array of shape \(400"):
        select_label_free(learner, X, 6, embedding=Z.transform(X[:10]))
    with pytest.raises(ValueError, match="feature_extractor's output must be"):
        select_label_free(learner, X, 6, embedding=lambda rows: rows[:, 0])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(n=0),
            ValueError,
            r"n must be between 1 and the pool size \(400\), got n=0",
        ),
        (dict(n=2.0), TypeError, "n must be an integer, got 2.0 of type float"),
        (dict(n=3, method="farthest"), ValueError, "method must be one of"),
    ],
)
def test_bad_arguments(blobs4, kwargs, error, match):
    X, _ = blobs4
    with pytest.raises(error, match=match):
        select_label_free(LogisticRegression(), X, **kwargs)


# ------------------------------------------------------------ TypiClust
def test_typiclust_strategy_uses_the_feature_extractor(blobs4):
    X, y = blobs4
    calls = []

    def extractor(rows):
        calls.append(len(rows))
        return np.asarray(rows)[:, :1] * 2.0

    learner = skal.ActiveLearner(
        LogisticRegression(), TypiClust(feature_extractor=extractor), random_state=0
    ).fit(X[:30], y[:30])
    state = learner.random_state_.get_state()
    picks = learner.query(X[30:], n=5)
    assert sorted(calls) == [30, 370]  # the labelled rows and the candidates
    rng = np.random.RandomState(0)
    rng.set_state(state)
    rng.randint(np.iinfo(np.int32).max)  # the learner's torch seed
    expected = typiclust_select(X[30:, :1] * 2.0, X[:30, :1] * 2.0, 5, random_state=rng)
    np.testing.assert_array_equal(picks, expected)


def test_typiclust_rejects_a_bad_extractor_output(blobs4):
    X, y = blobs4
    learner = skal.ActiveLearner(
        LogisticRegression(), TypiClust(feature_extractor=lambda rows: rows[:3])
    ).fit(X[:30], y[:30])
    with pytest.raises(ValueError, match=r"must be an array of shape \(370, ...\)"):
        learner.query(X[30:], n=2)


# ---------------------------------------------------- simulated initial sets
@pytest.mark.parametrize("initial", ["kmeans++", "kcenter", "typiclust"])
def test_label_free_initial_sets_read_no_label(blobs4, initial):
    X, y = blobs4
    kw = dict(
        cv=2, n_initial=8, query_size=4, n_rounds=1, initial=initial, random_state=0
    )
    learner = skal.ActiveLearner(LogisticRegression(), "margin")
    *_, queried = active_learning_curve(learner, X, y, return_queried=True, **kw)
    # other labels (classes kept): the same initial rows
    y_other = (y + 1) % 4
    *_, again = active_learning_curve(learner, X, y_other, return_queried=True, **kw)
    np.testing.assert_array_equal(queried[:, :8], again[:, :8])
    assert all(len(set(y[row[:8]])) == 4 for row in queried)  # blobs: all covered


def test_label_free_initial_set_on_a_dataset_without_labels(digits):
    X, y = digits
    data = TensorDataset(
        torch.from_numpy(X[:300].astype(np.float32)), torch.from_numpy(y[:300])
    )
    learner = skal.ActiveLearner(make_net(max_epochs=1), classes=list(range(10)))
    n_labeled, scores = active_learning_curve(
        learner,
        data,
        None,
        cv=[(np.arange(200), np.arange(200, 300))],
        n_initial=10,
        query_size=5,
        n_rounds=1,
        initial="kcenter",
        random_state=0,
    )
    assert scores.shape == (1, 2)


def test_unknown_initial_lists_the_methods(blobs4):
    X, y = blobs4
    with pytest.raises(ValueError, match=r"'initial' .* one of .*'typiclust'"):
        active_learning_curve(
            skal.ActiveLearner(LogisticRegression()), X, y, initial="coreset"
        )
