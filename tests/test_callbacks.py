"""TrainUntilConvergence: dynamicAL's per-round stopping rule."""

import numpy as np
import pytest
from skorch.dataset import Dataset

import skal
from skal.nets import TrainUntilConvergence


def _data(seed=0, n=160):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 5)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)


def _net(callback, max_epochs=60, **kwargs):
    return skal.NeuralNetClassifier(
        skal.nets.MLP,
        lr=2e-2,
        max_epochs=max_epochs,
        callbacks=[callback],
        **kwargs,
    )


def test_stops_once_training_accuracy_stays_high():
    X, y = _data()
    stop = TrainUntilConvergence(threshold=0.9, patience=3)
    net = _net(stop).fit(X, y)
    acc = net.history[:, "train_acc"]
    assert stop.converged_ and len(net.history) < 60
    assert all(a >= 0.9 for a in acc[-3:])
    assert stop.epochs_ == len(net.history)


def test_min_and_max_epochs_per_round():
    X, y = _data()
    stop = TrainUntilConvergence(threshold=0.5, patience=1, min_epochs=7)
    assert len(_net(stop).fit(X, y).history) == 7
    stop = TrainUntilConvergence(threshold=1.0, patience=5, max_epochs=4)
    net = _net(stop).fit(X, y)
    assert len(net.history) == 4 and not stop.converged_


def test_counters_reset_at_each_round():
    X, y = _data()
    stop = TrainUntilConvergence(threshold=0.9, patience=3)
    net = _net(stop).fit(X, y)
    first = len(net.history)
    net.initialize_optimizer()
    net.partial_fit(X, y)
    # the streak restarts: the second round trains `patience` epochs at least
    assert stop.converged_ and stop.epochs_ >= 3
    assert len(net.history) == first + stop.epochs_


def test_only_training_data_is_looked_at():
    X, y = _data()
    X_valid, y_valid = _data(seed=1, n=80)
    histories = []
    for labels in (y_valid, 1 - y_valid):
        stop = TrainUntilConvergence(threshold=0.9, patience=3)
        with skal._utils.torch_seed(0):
            net = _net(stop, train_split=_FixedValid(X_valid, labels)).fit(X, y)
        histories.append(net.history)
    # flipping the validation labels changes validation scores, not the stop
    assert histories[0][-1, "valid_acc"] != histories[1][-1, "valid_acc"]
    assert len(histories[0]) == len(histories[1])
    assert histories[0][:, "train_acc"] == histories[1][:, "train_acc"]


class _FixedValid:
    """train_split that keeps all training data and adds a fixed validation set."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __call__(self, dataset, y=None):
        return dataset, _ds(self.X, self.y)


def _ds(X, y):
    return Dataset(X.astype(np.float32), y.astype(np.int64))


@pytest.mark.parametrize(
    "params, error, expected",
    [
        ({"threshold": 1.5}, ValueError, r"a float in \[0, 1\]; got 1.5"),
        ({"patience": -1}, ValueError, r"an int in \[0, inf\); got -1"),
        (
            {"min_epochs": 1.5},
            TypeError,
            r"an int in \[0, inf\); got 1.5 of type float",
        ),
        ({"max_epochs": 0}, ValueError, r"an int in \[1, inf\) or None; got 0"),
    ],
)
def test_invalid_parameters_raise(params, error, expected):
    X, y = _data()
    (name,) = params
    match = f"The '{name}' parameter of TrainUntilConvergence must be {expected}"
    with pytest.raises(error, match=match):
        _net(TrainUntilConvergence(**params)).fit(X, y)
