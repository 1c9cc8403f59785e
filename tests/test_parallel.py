"""One pool scored across a Dask cluster gives the single-process result."""

import numpy as np
import pytest
import torch

import skal
from skal._data import take
from skal._parallel import chunk_bounds

distributed = pytest.importorskip("dask.distributed")
joblib = pytest.importorskip("joblib")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(330, 6).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    return X[:40], y[:40], X[40:]


def fitted_learner(data, strategy):
    X, y, _ = data
    net = skal.NeuralNetClassifier(
        skal.nets.MLP,
        module__hidden_units=(16,),
        max_epochs=3,
        batch_size=16,
        iterator_valid__batch_size=32,
    )
    return skal.ActiveLearner(net, strategy=strategy, random_state=0).fit(X, y)


@pytest.mark.parametrize(
    "strategy", ["entropy", "margin", "least_confidence", "coreset", "badge", "random"]
)
def test_query_on_two_workers_picks_as_one_process(client, data, strategy):
    X_pool = data[2]
    local = fitted_learner(data, strategy).query(X_pool, n=12)
    learner = fitted_learner(data, strategy)
    with (
        distributed.get_task_stream(client) as tasks,
        joblib.parallel_backend("dask"),
    ):
        spread = learner.query(X_pool, n=12)
    np.testing.assert_array_equal(spread, local)
    # random sampling draws from the learner's random state: it stays local
    ran = {t["worker"] for t in tasks.data}
    assert len(ran) == (0 if strategy == "random" else 2)


def test_utility_on_two_workers_equals_one_process(client, data):
    X_pool = data[2]
    local = fitted_learner(data, "entropy").utility(X_pool)
    learner = fitted_learner(data, "entropy")
    with (
        distributed.get_task_stream(client) as tasks,
        joblib.parallel_backend("dask"),
    ):
        spread = learner.utility(X_pool)
    np.testing.assert_array_equal(spread, local)
    assert len({t["worker"] for t in tasks.data}) == 2


def test_chunk_bounds_cover_the_rows_on_batch_multiples():
    bounds = chunk_bounds(290, 2, 32)
    assert bounds == [(0, 160), (160, 290)]
    assert chunk_bounds(10, 4, 32) == [(0, 10)]
    assert chunk_bounds(0, 2, 32) == []


def test_take_keeps_the_kind_of_input():
    idx = np.array([3, 1])
    X = np.arange(12.0).reshape(6, 2)
    np.testing.assert_array_equal(take(X, idx), X[idx])
    t = torch.as_tensor(X)
    assert torch.equal(take(t, idx), t[[3, 1]])
    dataset = torch.utils.data.TensorDataset(t)
    subset = take(dataset, idx)
    assert isinstance(subset, torch.utils.data.Subset)
    assert torch.equal(subset[0][0], t[3]) and len(subset) == 2
