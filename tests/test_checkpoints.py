"""Checkpoints of simulated runs: every strategy resumes exactly, and a
damaged, edited or foreign checkpoint is refused with a clear error."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

import skal
from skal.datasets import load_digits_images
from skal.model_selection import (
    CheckpointError,
    _checkpoint,
    active_learning_curve,
    restore_strategy_state,
    strategy_state,
)
from skal.strategies import ALBL, get_strategy_names

ROOT = Path(__file__).resolve().parents[1]
CV = [(np.arange(150), np.arange(150, 200))]
KW = dict(cv=CV, n_initial=20, query_size=8, n_rounds=4, random_state=0)
DELETE = r"Delete that directory to restart this run from scratch"


@pytest.fixture(scope="module")
def images():
    X, y = load_digits_images()
    return X[:200], y[:200]


@pytest.fixture(scope="module")
def flat():
    X, y = load_digits(return_X_y=True)
    return X[:200] / 16.0, y[:200]


def _net(strategy):
    """A tiny SmallCNN (it has dropout, so BALD works), with TiDAL's or
    learning loss's head where the strategy needs one."""
    cls, extra = skal.NeuralNetClassifier, {}
    if strategy == "tidal":
        cls, extra = (
            skal.TiDALClassifier,
            {"tidal_layers": ["features.1", "features.5"]},
        )
    elif strategy == "lloss":
        cls = skal.LLossClassifier
        extra = {"lloss_layers": ["features.1", "features.5"], "lloss_hidden": 8}
    net = cls(
        skal.nets.SmallCNN,
        module__channels=4,
        module__hidden=16,
        max_epochs=2,
        batch_size=32,
        **extra,
    )
    return skal.ActiveLearner(net, strategy)


_NEEDS_NET = {
    "badge": "needs-a-net-gradient-embedding",
    "bald": "needs-dropout",
    "coreset": "needs-a-net-embedding",
    "dynamic_al": "needs-a-net",
    "dynamic_al_batch": "needs-a-net",
    "lloss": "needs-LLossClassifier",
    "tidal": "needs-TiDALClassifier",
    "albl": "default-arms-include-coreset-which-needs-a-net",
}
_CASES = [pytest.param("net", name, id=f"net-{name}") for name in get_strategy_names()]
for _name in get_strategy_names():
    _reason = _NEEDS_NET.get(_name)
    _CASES.append(
        pytest.param(
            "logistic",
            _name,
            id=f"logistic-{_name}" + (f"-skipped-{_reason}" if _reason else ""),
            marks=pytest.mark.skip(reason=_reason) if _reason else (),
        )
    )
# ALBL over arms a logistic regression supports
_CASES.append(pytest.param("logistic", "albl-lc-random", id="logistic-albl-lc-random"))


def _learner(kind, name):
    if name == "albl-lc-random":
        name = ALBL(["least_confidence", "random"])
    if kind == "net":
        return _net(name)
    return skal.ActiveLearner(LogisticRegression(max_iter=200), name)


class _Killed(BaseException):
    """Stands for the process dying: raised right after a commit."""


def _interrupted_run(X, y, tmp_path, learner, monkeypatch):
    """A run committed up to round 2, then killed; its directory."""
    save = _checkpoint.RunCheckpoint.save

    def save_then_die(self, round_, *args, **kwargs):
        save(self, round_, *args, **kwargs)
        if round_ == 2:
            raise _Killed

    monkeypatch.setattr(_checkpoint.RunCheckpoint, "save", save_then_die)
    with pytest.raises(_Killed):
        active_learning_curve(learner, X, y, checkpoint_dir=tmp_path, **KW)
    monkeypatch.setattr(_checkpoint.RunCheckpoint, "save", save)
    (run_dir,) = tmp_path.iterdir()
    return run_dir


@pytest.mark.parametrize("kind, name", _CASES)
def test_every_strategy_resumes_exactly(
    kind, name, images, flat, tmp_path, monkeypatch
):
    """Interrupted after round 2's commit (anything that happens later is
    lost, as with a kill during round 3), the resumed run's labelled rows
    and scores equal those of an uninterrupted run."""
    X, y = images if kind == "net" else flat
    _, ref_scores, ref_queried = active_learning_curve(
        _learner(kind, name), X, y, return_queried=True, **KW
    )
    run_dir = _interrupted_run(X, y, tmp_path, _learner(kind, name), monkeypatch)
    assert json.loads((run_dir / "state.json").read_text())["round"] == 2
    with _no_checkpoint_warning():
        _, scores, queried = active_learning_curve(
            _learner(kind, name), X, y, checkpoint_dir=tmp_path, return_queried=True,
            **KW,
        )  # fmt: skip
    np.testing.assert_array_equal(queried, ref_queried)
    np.testing.assert_array_equal(scores, ref_scores)
    assert len(list(tmp_path.iterdir())) == 1


@contextmanager
def _no_checkpoint_warning():
    """Fail if any warning says that state was not checkpointed."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield
    messages = [str(w.message) for w in records]
    assert not [m for m in messages if "checkpoint" in m], messages


# ------------------------------------------------------------ strategy state
def test_albl_state_round_trips_without_pickle(flat):
    X, y = flat
    learner = skal.ActiveLearner(
        LogisticRegression(max_iter=200), ALBL(["margin", "random"]), random_state=0
    ).fit(X[:20], y[:20])
    for _ in range(3):
        idx = 20 + learner.query(X[20:], 5)
        learner.teach(X[idx], y[idx])
    albl = learner.strategy_
    state, arrays = strategy_state(albl)
    json.dumps(state)  # JSON as it is
    assert all(a.dtype != object for a in arrays.values())
    fresh = ALBL(["margin", "random"])
    restore_strategy_state(fresh, json.loads(json.dumps(state)), arrays)
    assert fresh.arm_history_ == albl.arm_history_ and len(fresh.arm_history_) == 3
    assert fresh.reward_history_ == albl.reward_history_
    assert [type(s) for s in fresh.strategies_] == [type(s) for s in albl.strategies_]
    np.testing.assert_array_equal(fresh.log_weights_, albl.log_weights_)
    np.testing.assert_array_equal(fresh.queried_rows_, albl.queried_rows_)
    with pytest.raises(ValueError, match="does not build"):
        restore_strategy_state(ALBL(["margin", "entropy"]), state, arrays)


class _HoldsAnObject(skal.strategies.QueryStrategy):
    def select(self, context, X, n):
        self.model_ = object()
        return np.arange(n)


def test_state_that_needs_pickling_is_refused_before_the_round_is_written(
    flat, tmp_path
):
    X, y = flat
    learner = skal.ActiveLearner(LogisticRegression(max_iter=200), _HoldsAnObject())
    with pytest.raises(TypeError, match=r"'model_' holds a object.*without pickling"):
        active_learning_curve(learner, X, y, checkpoint_dir=tmp_path, **KW)
    (run_dir,) = tmp_path.iterdir()  # the state appears in round 1
    assert json.loads((run_dir / "state.json").read_text())["round"] == 0
    assert sorted(p.name for p in run_dir.iterdir()) == ["state-r0.npz", "state.json"]


# ------------------------------------------------------ damaged checkpoints
def _flip_bytes(path, offset, n=8):
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_json(path, **changes):
    state = json.loads(path.read_text())
    state.update(changes)
    path.write_text(json.dumps(state))


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: _flip_bytes(d / "weights-r2.pt", 2000),
            r"file weights-r2\.pt does not match the checksum.*corrupted or truncated",
        ),
        (
            lambda d: _truncate(d / "weights-r2.pt"),
            r"file weights-r2\.pt does not match the checksum",
        ),
        (
            lambda d: _truncate(d / "state-r2.npz"),
            r"file state-r2\.npz does not match the checksum",
        ),
        (lambda d: (d / "state-r2.npz").unlink(), r"file state-r2\.npz is missing"),
        (
            lambda d: _truncate(d / "state.json"),
            r"state\.json is not a complete checkpoint index",
        ),
        (
            lambda d: _edit_json(d / "state.json", scores=[0.9, 0.9, 0.9]),
            r"state\.json was modified after it was written",
        ),
    ],
    ids=["flipped-weights", "truncated-weights", "truncated-npz", "missing-npz",
         "truncated-state-json", "edited-state-json"],
)  # fmt: skip
def test_damaged_checkpoint_is_refused(images, tmp_path, monkeypatch, damage, message):
    X, y = images
    run_dir = _interrupted_run(X, y, tmp_path, _net("margin"), monkeypatch)
    damage(run_dir)
    with pytest.raises(CheckpointError, match=message) as info:
        active_learning_curve(_net("margin"), X, y, checkpoint_dir=tmp_path, **KW)
    assert str(run_dir) in str(info.value)
    assert DELETE in str(info.value)


def _recommit(path, **changes):
    """Edit state.json the way someone who knows the format would, with a
    valid checksum."""
    state = json.loads(path.read_text())
    state.pop("checksum", None)
    state.update(changes)
    canonical = json.dumps(state, sort_keys=True).encode()
    state["checksum"] = hashlib.sha256(canonical).hexdigest()
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("name", ["../outside.npz", "/tmp/outside.npz", "x/../../a.pt"])
def test_file_names_are_confined_to_the_run_directory(
    flat, tmp_path, monkeypatch, name
):
    X, y = flat
    learner = skal.ActiveLearner(LogisticRegression(max_iter=200), "margin")
    run_dir = _interrupted_run(X, y, tmp_path / "ckpt", learner, monkeypatch)
    outside = tmp_path / "ckpt" / "outside.npz"
    outside.write_bytes((run_dir / "state-r2.npz").read_bytes())
    files = {name: hashlib.sha256(outside.read_bytes()).hexdigest()}
    _recommit(run_dir / "state.json", arrays=name, files=files)
    with pytest.raises(
        CheckpointError, match=r"names the file .* not a file of the run"
    ):
        active_learning_curve(learner, X, y, checkpoint_dir=tmp_path / "ckpt", **KW)


_MODULE_SOURCE = """
from torch import nn

WIDTH = {width}


class EditedNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.LazyLinear(WIDTH), nn.{act}())
        self.head = nn.Linear(WIDTH, num_classes)

    def forward(self, x):
        return self.head(self.body(x))
"""


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            dict(act="Tanh"),
            r"the code of \['learner__estimator__module'\] differs from the code "
            "that wrote it",
        ),
        (
            dict(width=24),  # outside the class: only the weights' shapes tell
            r"its weights do not fit the network.*size mismatch",
        ),
    ],
    ids=["edited-class", "edited-module-constant"],
)
def test_resuming_with_edited_network_code_is_refused(
    images, tmp_path, monkeypatch, edit, message
):
    X, y = images
    source = tmp_path / "edited_net_module.py"
    source.write_text(_MODULE_SOURCE.format(width=16, act="ReLU"))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("edited_net_module")

    def learner():
        net = skal.NeuralNetClassifier(module.EditedNet, max_epochs=2, batch_size=32)
        return skal.ActiveLearner(net, "margin")

    ckpt = tmp_path / "ckpt"
    run_dir = _interrupted_run(X, y, ckpt, learner(), monkeypatch)
    source.write_text(_MODULE_SOURCE.format(**{"width": 16, "act": "ReLU", **edit}))
    importlib.invalidate_caches()
    module = importlib.reload(module)
    with pytest.raises(CheckpointError, match=message) as info:
        active_learning_curve(learner(), X, y, checkpoint_dir=ckpt, **KW)
    assert str(run_dir) in str(info.value) and DELETE in str(info.value)
    sys.modules.pop("edited_net_module", None)


# ----------------------------------------------------------------- run keys
_KEY_SCRIPT = """
import sys
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
import skal
from skal.model_selection import active_learning_curve

X, y = load_digits(return_X_y=True)
offset = 0.0
estimator = make_pipeline(
    FunctionTransformer(lambda X: X * 1.0), LogisticRegression(max_iter=200)
)
active_learning_curve(
    skal.ActiveLearner(estimator, "margin"), X[:200] / 16, y[:200],
    cv=[(np.arange(150), np.arange(150, 200))], n_initial=20, query_size=8,
    n_rounds=1, random_state=0, scoring=lambda est, X, y: est.score(X, y) + offset,
    checkpoint_dir=sys.argv[1],
)
"""


def test_lambdas_give_the_same_run_key_in_every_process(tmp_path):
    """A rerun in a new process finds the run it checkpointed (it used to
    start over in a new directory each time)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", _KEY_SCRIPT, str(tmp_path)], env=env, check=True
        )
    assert len(list(tmp_path.iterdir())) == 1


def test_unstable_parameter_is_refused_with_a_clear_error(flat, tmp_path):
    X, y = flat
    learner = skal.ActiveLearner(LogisticRegression(class_weight=threading.Lock()))
    with pytest.raises(TypeError, match=r"cannot name checkpoints.*lock"):
        active_learning_curve(learner, X, y, checkpoint_dir=tmp_path, **KW)


def test_random_state_instances_give_a_stable_key(flat, tmp_path):
    X, y = flat
    for _ in range(2):
        learner = skal.ActiveLearner(
            LogisticRegression(max_iter=200, random_state=np.random.RandomState(0)),
            random_state=np.random.RandomState(1),
        )
        active_learning_curve(learner, X, y, checkpoint_dir=tmp_path, **KW)
    assert len(list(tmp_path.iterdir())) == 1


def test_key_covers_the_scoring_function(flat, tmp_path):
    X, y = flat
    learner = skal.ActiveLearner(LogisticRegression(max_iter=200), "margin")
    for scoring in ("accuracy", "balanced_accuracy", "accuracy"):
        active_learning_curve(
            learner, X, y, scoring=scoring, checkpoint_dir=tmp_path, **KW
        )
    assert len(list(tmp_path.iterdir())) == 2


# --------------------------------------------------------- concurrent writers
def test_concurrent_writers_do_not_collide(flat, tmp_path):
    """Two writers committing the same run: no temporary file is renamed
    under the other's feet, and the last commit loads."""
    X, y = flat
    learner = skal.ActiveLearner(
        LogisticRegression(max_iter=200), ALBL(["margin", "random"]), random_state=0
    ).fit(X[:20], y[:20])
    errors = []

    def writer():
        checkpoint = _checkpoint.RunCheckpoint(tmp_path / "run")
        try:
            for round_ in range(40):
                checkpoint.save(round_ % 3, np.arange(20), [0.5], learner)
        except Exception as exc:  # collected: a thread's exception is lost
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = _checkpoint.RunCheckpoint(tmp_path / "run").load()
    assert state["round"] in (0, 1, 2) and state["n_labeled"] == 20
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_run_keys_tell_transforms_apart_by_their_settings():
    """Two augmentations that differ only in a setting (no weights) must not
    share a run key, or a run would resume with the other one."""
    from torchvision.transforms import v2

    from skal.model_selection._fingerprint import stable_token

    def token(transform):
        net = skal.NeuralNetClassifier(skal.nets.MLP, train_transform=transform)
        return stable_token(skal.ActiveLearner(net))

    assert token(v2.RandomCrop(8, padding=1)) != token(v2.RandomCrop(8, padding=3))
    assert token(v2.RandomCrop(8, padding=1)) == token(v2.RandomCrop(8, padding=1))
    composed = v2.Compose([v2.RandomRotation(10), v2.RandomCrop(8)])
    rotated = v2.Compose([v2.RandomRotation(20), v2.RandomCrop(8)])
    assert token(composed) != token(rotated)
