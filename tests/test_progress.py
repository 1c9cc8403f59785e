"""The simulations' progress bar counts every batch a query reads.

Each registered strategy queries a pool of a Dataset that counts the items
it gives out, through a net whose inference ``DataLoader`` counts the
batches it yields. The bar must show exactly the loader's count, and the
loader's batches must hold every item read from the Dataset (no strategy
reads around the counted loaders).
"""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset, Subset

import skal
from skal.model_selection import ActiveLearningSimulation
from skal.model_selection._simulation import pool_progress
from skal.strategies import get_strategy_names

BATCH = 16


class CountingItems(Dataset):
    """8×8 digit images and labels; counts the items read."""

    def __init__(self, images, labels):
        self.images, self.labels, self.reads = images, labels, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.reads += 1
        return self.images[i], self.labels[i]


class CountingLoader(DataLoader):
    """A DataLoader that counts the batches it yields and their samples."""

    batches = 0
    samples = 0

    def __iter__(self):
        for batch in super().__iter__():
            CountingLoader.batches += 1
            CountingLoader.samples += len(batch[1])
            yield batch


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    keep = np.flatnonzero(y < 3)[:150]
    return torch.from_numpy(X[keep].reshape(-1, 1, 8, 8).astype(np.float32)), y[keep]


def _net(strategy):
    layers = ["features.1", "features.3"]
    common = dict(
        module__channels=4,
        module__hidden=16,
        module__dropout=0.2,
        max_epochs=1,
        inference_batch_size=BATCH,
        iterator_valid=CountingLoader,
    )
    if strategy == "tidal":
        return skal.nets.TiDALClassifier(
            skal.nets.SmallCNN, tidal_layers=layers, **common
        )
    if strategy == "lloss":
        return skal.nets.LLossClassifier(
            skal.nets.SmallCNN, lloss_layers=layers, **common
        )
    return skal.NeuralNetClassifier(skal.nets.SmallCNN, **common)


@pytest.mark.parametrize("strategy", get_strategy_names())
def test_bar_counts_the_batches_each_strategy_reads(strategy, digits):
    images, labels = digits
    ds = CountingItems(images, labels)
    learner = skal.ActiveLearner(
        _net(strategy), strategy=strategy, classes=[0, 1, 2], random_state=0
    )
    learner.fit(Subset(ds, range(30)))
    learner.teach(Subset(ds, range(30, 35)))  # ALBL's state, a grown set
    pool = Subset(ds, range(35, 150))
    ds.reads = CountingLoader.batches = CountingLoader.samples = 0
    with pool_progress(learner, True, "query") as bar:
        learner.query(pool, n=5)
    assert bar.n == CountingLoader.batches
    assert CountingLoader.samples == ds.reads
    if strategy != "random":  # random sampling reads nothing
        assert bar.n >= math.ceil(len(pool) / BATCH)


def test_the_simulation_shows_the_bar(digits, monkeypatch):
    """With verbose=2 each round has a pool bar, which ends at the batches
    read: one pass of entropy over pools of 115, 100 and 85 rows."""
    from skal.model_selection import _simulation

    closed = []

    class Recording(_simulation.tqdm):
        def close(self):
            if not self.disable:  # tqdm closes a bar again when deleted
                closed.append((self.desc, self.n))
            super().close()

    monkeypatch.setattr(_simulation, "tqdm", Recording)
    images, labels = digits
    ds = CountingItems(images[:130], labels[:130])
    ActiveLearningSimulation(
        skal.ActiveLearner(_net("entropy"), classes=[0, 1, 2]),
        n_initial=15,
        query_size=15,
        n_rounds=3,
        random_state=0,
        verbose=2,
    ).fit(ds)
    queries = [(desc, n) for desc, n in closed if desc.endswith("pool")]
    assert [n for _, n in queries] == [math.ceil(n / BATCH) for n in (115, 100, 85)]
    assert [desc.split()[-2] for desc, _ in queries] == ["1:", "2:", "3:"]
