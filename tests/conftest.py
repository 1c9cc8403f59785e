"""Shared fixtures: small data sets and module classes."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_classification
from threadpoolctl import threadpool_limits
from torch import nn

import skal


class TinyMLP(nn.Module):
    """Small MLP whose input width adapts to the data (LazyLinear)."""

    def __init__(self, num_classes=2, hidden=32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.LazyLinear(hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.net(x)


class TupleMLP(TinyMLP):
    """Returns (logits, embedding): skorch's tuple convention."""

    def forward(self, x):
        h = self.net[:3](x)
        return self.net[3](h), h


@pytest.fixture(autouse=True)
def _single_thread():
    """Keep torch and BLAS on one thread each.

    The tests use tiny models, which gain nothing from threads; on a busy
    2-core machine spinning threads made single fits tens of times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def seeded():
    """torch's global generator seeded with 0, its state restored after."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


@pytest.fixture(scope="session")
def blobs():
    """Three well-separated classes, float64, 4 features."""
    X, y = make_classification(
        n_samples=300,
        n_features=4,
        n_informative=4,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        class_sep=2.5,
        random_state=0,
    )
    return X, y


@pytest.fixture(scope="session")
def digits():
    """sklearn's 8x8 digits scaled to [0, 1], flattened (64 features)."""
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def make_net(**kwargs):
    """A small skal net that trains fast and well enough on the fixtures."""
    params = dict(module=TinyMLP, max_epochs=20, lr=0.01, batch_size=64)
    params.update(kwargs)
    return skal.NeuralNetClassifier(**params)


@pytest.fixture
def net_factory():
    return make_net


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture(scope="module")
def data():
    """Three classes in 6 features: 60 labelled rows, then a pool of 200
    (``X_lab, y_lab, X_pool, y_pool``); modules may define their own."""
    rng = np.random.RandomState(0)
    X = rng.randn(260, 6).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    return X[:60], y[:60], X[60:], y[60:]
