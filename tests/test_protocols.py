"""Tests of the papers' training protocols (skal.nets.dynamic_al_protocol,
skal.nets.tidal_protocol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skal
from skal.nets import TrainUntilConvergence, dynamic_al_protocol, tidal_protocol

LAYERS = ["features.1", "features.3"]
SMALL = dict(module__channels=4, module__hidden=16)


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    return rng.randn(60, 1, 8, 8).astype(np.float32), rng.randint(3, size=60)


def _lrs(net, since=0):
    return [round(lr, 6) for lr in net.history[since:, "event_lr"]]


def test_tidal_protocol_sets_sgd_weight_decay_and_step_decay(images):
    X, y = images
    net = skal.TiDALClassifier(
        skal.nets.SmallCNN, tidal_layers=LAYERS, classes=[0, 1, 2], **SMALL,
        **tidal_protocol(max_epochs=10),
    ).fit(X, y)  # fmt: skip
    opt = net.optimizer_
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 5e-4)
    # the head is optimised with the backbone, with the same settings
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in params for p in net.tidal_module_.parameters())
    assert net.batch_size == 128 and net.tidal_lambda == 1.0
    assert _lrs(net) == [0.1] * 8 + [0.01] * 2  # x0.1 after 80% of the epochs


def test_tidal_protocol_restarts_the_schedule_every_round(images):
    X, y = images
    net = skal.NeuralNetClassifier(
        skal.nets.SmallCNN, **SMALL, **tidal_protocol(max_epochs=5, decay_at=0.4)
    )
    learner = skal.ActiveLearner(net, "entropy", classes=[0, 1, 2], random_state=0)
    learner.fit(X[:30], y[:30])
    before = {k: v.clone() for k, v in learner.estimator_.module_.state_dict().items()}
    learner.teach(X[30:40], y[30:40])
    history = learner.estimator_.history
    assert len(history) == 10
    assert _lrs(learner.estimator_, 5) == [0.1, 0.1, 0.01, 0.01, 0.01]
    assert _lrs(learner.estimator_)[:5] == [0.1, 0.1, 0.01, 0.01, 0.01]
    # warm start: trained on from the previous weights, not re-initialised
    after = learner.estimator_.module_.state_dict()
    drift = sum(float((after[k] - before[k]).abs().sum()) for k in before)
    fresh = skal.NeuralNetClassifier(
        skal.nets.SmallCNN, module__num_classes=3, **SMALL
    ).initialize()
    gap = sum(
        float((fresh.module_.state_dict()[k] - before[k]).abs().sum()) for k in before
    )
    assert 0 < drift < gap


def test_dynamic_al_protocol_trains_until_convergence_on_training_data():
    rng = np.random.RandomState(0)
    X = rng.randn(200, 4)
    easy = (X[:, 0] > 0).astype(int)
    params = dynamic_al_protocol(lr=1e-2, min_epochs=3, patience=2, max_epochs=40)
    assert params["optimizer"] is torch.optim.Adam and params["max_epochs"] == 40
    net = skal.NeuralNetClassifier(skal.nets.MLP, **params).fit(X, easy)
    stop = dict(net.callbacks)["convergence"]
    assert stop.converged_ and 3 <= len(net.history) < 40
    train_acc = net.history[:, "train_acc"]
    assert train_acc[-1] >= 0.97 and train_acc[-2] >= 0.97
    # the learning rate is constant: Adam without a scheduler
    assert {g["lr"] for g in net.optimizer_.param_groups} == {1e-2}
    # labels it cannot fit: it stops at max_epochs, not before
    noise = rng.randint(2, size=200)
    net = skal.NeuralNetClassifier(
        skal.nets.MLP, **dynamic_al_protocol(min_epochs=2, max_epochs=5)
    ).fit(X, noise)
    assert len(net.history) == 5 and not dict(net.callbacks)["convergence"].converged_


def test_protocols_return_fresh_callbacks_and_default_bounds():
    a, b = dynamic_al_protocol(), dynamic_al_protocol()
    assert a["callbacks"][0][1] is not b["callbacks"][0][1]
    stop = a["callbacks"][0][1]
    assert isinstance(stop, TrainUntilConvergence)
    assert (stop.min_epochs, stop.max_epochs, a["max_epochs"]) == (10, 20, 20)
    assert (stop.threshold, stop.patience) == (0.97, 10)
    scheduler = tidal_protocol()["callbacks"][0][1]
    assert scheduler.kwargs["milestones"] == [160]


@pytest.mark.parametrize(
    ("factory", "kwargs", "error", "match"),
    [
        (dynamic_al_protocol, {"min_epochs": 0}, ValueError, r"'min_epochs'.*got 0"),
        (
            dynamic_al_protocol,
            {"min_epochs": 5, "max_epochs": 3},
            ValueError,
            r"'max_epochs' parameter of dynamic_al_protocol must be an int in "
            r"\[5, inf\); got 3",
        ),
        (dynamic_al_protocol, {"lr": -1.0}, ValueError, r"'lr'.*\(0, inf\); got -1.0"),
        (dynamic_al_protocol, {"threshold": 2}, ValueError, "'threshold'.*got 2"),
        (dynamic_al_protocol, {"patience": "5"}, TypeError, "'patience'.*type str"),
        (tidal_protocol, {"max_epochs": 2.5}, TypeError, "'max_epochs'.*type float"),
        (tidal_protocol, {"decay_at": 1.5}, ValueError, r"'decay_at'.*\(0, 1\]"),
        (tidal_protocol, {"momentum": -0.1}, ValueError, r"'momentum'.*\[0, inf\)"),
        (tidal_protocol, {"batch_size": 0}, ValueError, r"'batch_size'.*got 0"),
    ],
)
def test_protocols_reject_bad_values(factory, kwargs, error, match):
    with pytest.raises(error, match=match):
        factory(**kwargs)
