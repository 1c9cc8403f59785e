"""Experiment tracking: callbacks that hold a writer or a lock survive every
clone, and each round's quantities reach skorch's loggers (TensorBoard)."""

import threading

import numpy as np
import pytest
from sklearn.base import clone
from skorch.callbacks import Callback

import skal
from skal.model_selection import ActiveLearningSimulation

tensorboard = pytest.importorskip("tensorboard")
from skorch.callbacks import TensorBoard  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

EPOCHS = 2


@pytest.fixture(scope="module")
def xy():
    rng = np.random.RandomState(0)
    X = rng.randn(200, 6).astype(np.float32)
    return X, (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)


def _scalars(directory):
    events = EventAccumulator(str(directory))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }


def test_tensorboard_follows_three_rounds(xy, tmp_path):
    """A real SummaryWriter through skorch's TensorBoard: the event files hold,
    for every epoch, the round, the labelled count, the last query's seconds
    and the strategy's score summary, equal to the utilities computed apart."""
    X, y = xy
    writer = SummaryWriter(tmp_path)
    net = skal.NeuralNetClassifier(
        skal.nets.MLP, callbacks=[TensorBoard(writer)], max_epochs=EPOCHS
    )
    learner = skal.ActiveLearner(net, strategy="entropy", random_state=0)
    learner.fit(X[:20], y[:20])
    pool, y_pool = X[20:], y[20:]
    expected = []
    for _ in range(3):
        utility = learner.utility(pool)  # entropy: what the query ranks by
        idx = learner.query(pool, n=5)
        expected.append(
            (utility.mean(), utility.max(), utility[idx].mean(), learner.n_labeled_)
        )
        learner.teach(pool[idx], y_pool[idx])
        pool, y_pool = np.delete(pool, idx, 0), np.delete(y_pool, idx)
    writer.close()
    logged = _scalars(tmp_path)
    steps = list(range(1, 4 * EPOCHS + 1))
    rounds = [(s, float((s - 1) // EPOCHS)) for s in steps]
    assert logged["al/round"] == rounds
    assert logged["al/n_labeled"] == [(s, 20.0 + 5 * r) for s, r in rounds]
    assert [s for s, _ in logged["Loss/train_loss"]] == steps
    assert [s for s, _ in logged["al/query_seconds"]] == steps[EPOCHS:]
    assert all(v > 0 for _, v in logged["al/query_seconds"])
    for key, column in (
        ("al/score_mean", 0),
        ("al/score_max", 1),
        ("al/score_picked_mean", 2),
    ):
        got = [v for s, v in logged[key]]
        want = np.repeat([e[column] for e in expected], EPOCHS)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert [e[3] for e in expected] == [20, 25, 30]
    assert (
        "al/round"
        not in skal.NeuralNetClassifier(skal.nets.MLP, max_epochs=1)
        .fit(X, y)
        .history[-1]
    )  # a net trained on its own records no round


def test_set_based_strategies_log_no_scores(xy, tmp_path):
    X, y = xy
    net = skal.NeuralNetClassifier(skal.nets.MLP, max_epochs=1)
    learner = skal.ActiveLearner(net, strategy="coreset", random_state=0)
    learner.fit(X[:20], y[:20])
    idx = learner.query(X[20:], n=5)
    learner.teach(X[20:][idx], y[20:][idx])
    row = learner.estimator_.history[-1]
    assert row["al/round"] == 1 and row["al/query_seconds"] > 0
    assert not any(key.startswith("al/score") for key in row)


class Locked(Callback):
    """A callback holding a lock (which cannot be copied) and a list."""

    def __init__(self, lock, epochs=None):
        self.lock = lock
        self.epochs = epochs

    def on_epoch_end(self, net, **kwargs):
        with self.lock:
            self.epochs.append(len(net.history))


def test_clone_shares_what_cannot_be_copied(xy, tmp_path):
    """sklearn.clone of a net, of a learner and of a simulation: a callback's
    lock or writer is shared with the clone, its other parameters copied."""
    X, y = xy
    lock, writer = threading.Lock(), SummaryWriter(tmp_path)
    locked, board = Locked(lock, []), TensorBoard(writer)
    net = skal.NeuralNetClassifier(
        skal.nets.MLP, callbacks=[locked, ("board", board)], max_epochs=EPOCHS
    )
    copy = clone(net)
    cb, (name, cb_board) = copy.callbacks
    assert cb is not locked and cb.lock is lock
    assert cb.epochs is not locked.epochs and cb.epochs == []
    assert name == "board" and cb_board is not board and cb_board.writer is writer
    learner = clone(skal.ActiveLearner(net, random_state=0)).fit(X[:20], y[:20])
    assert learner.estimator_.callbacks[0].epochs == list(range(1, EPOCHS + 1))
    assert locked.epochs == []  # the template's own list is untouched
    sim = ActiveLearningSimulation(
        skal.ActiveLearner(net), n_initial=10, query_size=5, n_rounds=2
    )
    sim.fit(X, y)
    writer.close()
    rounds = {v for _, v in _scalars(tmp_path)["al/round"]}
    assert rounds == {0.0, 1.0, 2.0}
    plain = skal.NeuralNetClassifier(skal.nets.MLP, callbacks=[Locked(None, [])])
    assert clone(plain).callbacks[0].epochs is not plain.callbacks[0].epochs
