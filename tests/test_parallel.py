"""One pool scored across a Dask cluster gives the single-process result."""

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import skal
from skal._data import take
from skal._parallel import chunk_bounds
from skal.strategies.uncertainty import EntropySampling

distributed = pytest.importorskip("dask.distributed")
dask = pytest.importorskip("dask")
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


# ------------------------------------------------ workers that die
class DiesOnce(EntropySampling):
    """Entropy whose first call, wherever it runs, ends its process.

    The flag file marks the death, so the rerun after the worker's restart
    scores normally.
    """

    def __init__(self, flag="", always=False):
        self.flag = flag
        self.always = always

    def utility(self, context, X):
        if self.always or not os.path.exists(self.flag):
            open(self.flag, "w").close()
            os._exit(1)
        return super().utility(context, X)


@contextmanager
def one_worker_cluster(**config):
    """A cluster whose only worker holds the only copy of what is scattered."""
    with (
        dask.config.set(config),
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: the module's cluster may hold 8787
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def bounded(fn, seconds=240):
    """fn() in a thread, failing the test rather than hanging it."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=seconds)


def test_query_survives_a_worker_that_dies_once(data, tmp_path):
    """Defect 13: the worker holding the scattered model dies during the query
    and restarts; the model is sent again and the query gives the picks of
    one process (it failed with FutureCancelledError: already forgotten)."""
    X_pool = data[2]
    flag = str(tmp_path / "died")
    open(flag, "w").close()  # scored in this process: no death
    expected = fitted_learner(data, DiesOnce(flag)).query(X_pool, n=12)
    os.remove(flag)
    learner = fitted_learner(data, DiesOnce(flag))
    with one_worker_cluster() as client:

        def query():
            with joblib.parallel_backend("dask"):
                return learner.query(X_pool, n=12)

        picked = bounded(query)
        assert os.path.exists(flag)  # the worker did die
        assert client.run(os.getpid)  # and was restarted
    np.testing.assert_array_equal(picked, expected)


class FailingClient:
    """A client whose every gather fails with ``error``; counts the scatters."""

    def __init__(self, error):
        self.error = error
        self.scatters = 0

    def scheduler_info(self):
        return {"workers": {"tcp://worker": {}}}

    def scatter(self, value, **kwargs):
        self.scatters += 1
        return value

    def submit(self, fn, *args, **kwargs):
        return None

    def gather(self, futures):
        raise self.error


@pytest.mark.parametrize(
    "error, scatters, match",
    [
        (
            distributed.CancelledError("already forgotten"),
            2,
            "lost the model .* 2 times",
        ),
        (
            distributed.KilledWorker("task", SimpleNamespace(address="tcp://w"), 0),
            1,
            "killed every worker",
        ),
        (OSError("Timed out trying to connect"), 1, "scheduler could not be reached"),
    ],
    ids=["lost twice", "killed worker", "no scheduler"],
)
def test_cluster_failures_give_clear_errors(data, error, scatters, match):
    """Defect 18: the cluster's own failures (the model lost again after being
    sent again, a task that kills its workers, no scheduler) raise a
    RuntimeError saying what happened and that the learner is unchanged
    (Dask's errors came through raw)."""
    learner = fitted_learner(data, "entropy")
    client = FailingClient(error)
    context = learner._context()
    with pytest.raises(RuntimeError, match=f"on the Dask cluster .*failed: .*{match}"):
        skal._parallel.map_rows(client, context, data[2], lambda c, X: None)
    assert client.scatters == scatters  # sent again only when it was lost
