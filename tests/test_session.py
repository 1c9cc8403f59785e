"""LabelingSession: durable labels, journaled queries, resume without pickle."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import skal

ROOT = Path(__file__).resolve().parents[1]

# the same data and learner in this process and in the killed subprocesses
SETUP = """
import numpy as np
from sklearn.datasets import make_classification
import skal
X, y = make_classification(n_samples=200, n_features=6, n_informative=4,
                           n_classes=3, random_state=0)
X = X.astype(np.float32)

def make_learner(strategy="margin"):
    net = skal.NeuralNetClassifier(skal.nets.MLP, module__hidden_units=(16,),
                                   max_epochs=3, batch_size=16)
    return skal.ActiveLearner(net, strategy=strategy, classes=[0, 1, 2],
                              random_state=0)
"""
ns = {}
exec(SETUP, ns)
X, y, make_learner = ns["X"], ns["y"], ns["make_learner"]


def run_rounds(session, rounds, n=5):
    picks = []
    for _ in range(rounds):
        rows = session.query(n)
        picks.append(rows)
        session.teach(rows, y[rows])
    return picks


def test_resume_continues_as_if_never_stopped(tmp_path):
    a = skal.LabelingSession(make_learner(), X, tmp_path / "a")
    a.teach(range(10), y[:10])
    straight = run_rounds(a, 3)
    b = skal.LabelingSession(make_learner(), X, tmp_path / "b")
    b.teach(range(10), y[:10])
    first = run_rounds(b, 1)
    b = skal.LabelingSession(make_learner(), X, tmp_path / "b")  # reopened
    assert b.learner_.n_labeled_ == 15
    resumed = first + run_rounds(b, 2)
    for p, q in zip(straight, resumed, strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_allclose(
        a.learner_.predict_proba(X), b.learner_.predict_proba(X), atol=1e-6
    )
    files = {p.suffix for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert files <= {".json", ".jsonl", ".npz", ".pt", ""}  # "" is the lock


def test_taught_rows_are_never_queried_again(tmp_path):
    session = skal.LabelingSession(make_learner("entropy"), X, tmp_path)
    session.teach(range(10), y[:10])
    picks = np.concatenate(run_rounds(session, 6, n=10))
    assert len(np.unique(picks)) == 60
    assert not set(picks.tolist()) & set(range(10))
    np.testing.assert_array_equal(
        np.sort(session.labeled_indices_), np.sort(np.r_[np.arange(10), picks])
    )
    np.testing.assert_array_equal(session.labels_, y[session.labeled_indices_])


def test_open_query_is_returned_until_answered(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    rows = session.query(4)
    again = skal.LabelingSession(make_learner(), X, tmp_path).query(99)
    np.testing.assert_array_equal(again, rows)
    session.teach(rows[:1], y[rows[:1]])  # a partial answer
    np.testing.assert_array_equal(session.query(4), rows[1:])  # in query order
    session.teach(rows[1:], y[rows[1:]])
    assert not set(session.query(4).tolist()) & set(rows.tolist())


def test_errors(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    with pytest.raises(ValueError, match=r"rows \[3\] already have an answer"):
        session.teach([3, 50], y[[3, 50]])
    with pytest.raises(ValueError, match=r"rows \[50\] are repeated"):
        session.teach([50, 50], [0, 0])
    with pytest.raises(ValueError, match=r"rows \[50\] have no answer"):
        session.relabel([50], [0])
    with pytest.raises(ValueError, match=r"must be in \[0, 200\), got \[200\]"):
        session.teach([200], [0])
    with pytest.raises(TypeError, match="fit must be a bool"):
        session.teach([50], [0], fit="no")
    with pytest.raises(TypeError, match="annotator must be a string"):
        session.teach([50], [0], annotator=3)
    with pytest.raises(TypeError, match="n must be an integer"):
        session.query("3")
    with pytest.raises(ValueError, match="cold_start must be one of"):
        skal.LabelingSession(make_learner(), X, tmp_path, cold_start="magic")
    with pytest.raises(ValueError, match="lock_timeout must be"):
        skal.LabelingSession(make_learner(), X, tmp_path, lock_timeout=-1)
    with pytest.raises(ValueError, match="2 indices but 1 labels"):
        session.teach([50, 51], [0])
    with pytest.raises(ValueError, match="pool of 200 rows; this pool has 100"):
        skal.LabelingSession(make_learner(), X[:100], tmp_path)


def test_non_network_learner(tmp_path):
    learner = skal.ActiveLearner(LogisticRegression(), classes=[0, 1, 2])
    session = skal.LabelingSession(learner, X, tmp_path)
    session.teach(range(10), y[:10])
    rows = session.query(3)
    session.teach(rows, y[rows])
    reopened = skal.LabelingSession(learner, X, tmp_path)
    np.testing.assert_allclose(
        reopened.learner_.predict_proba(X), session.learner_.predict_proba(X)
    )


def _spawn(code):
    return subprocess.Popen(
        [sys.executable, "-c", SETUP + textwrap.dedent(code)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_sigkill_between_query_and_teach(tmp_path):
    """A process killed after showing a query: the reopened session shows the
    same rows, and once answered, nothing is lost or labelled twice."""
    proc = _spawn(
        f"""
        session = skal.LabelingSession(make_learner(), X, {str(tmp_path)!r})
        session.teach(range(10), y[:10])
        rows = session.query(5)
        print(" ".join(map(str, rows)), flush=True)
        import time; time.sleep(600)
        """
    )
    shown = np.array(proc.stdout.readline().split(), dtype=int)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    assert session.learner_.n_labeled_ == 10
    np.testing.assert_array_equal(session.query(5), shown)
    session.teach(shown, y[shown])
    assert len(session.labeled_indices_) == 15
    assert len(np.unique(session.labeled_indices_)) == 15
    # the same picks as a session that never crashed
    ref = skal.LabelingSession(make_learner(), X, tmp_path / "ref")
    ref.teach(range(10), y[:10])
    np.testing.assert_array_equal(ref.query(5), shown)


def test_sigkill_during_training(tmp_path):
    """Killed while training on new answers: the answers are on disk, the
    reopened session trains on them and goes on as an uninterrupted one."""
    proc = _spawn(
        f"""
        import os, signal
        session = skal.LabelingSession(make_learner(), X, {str(tmp_path)!r})
        session.teach(range(10), y[:10])
        rows = session.query(5)
        print(" ".join(map(str, rows)), flush=True)
        def crash(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        session.learner_.teach = crash
        session.teach(rows, y[rows])
        """
    )
    answered = np.array(proc.stdout.readline().split(), dtype=int)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    np.testing.assert_array_equal(session.labeled_indices_[10:], answered)
    assert session.learner_.n_labeled_ == 15  # trained on them at reopening
    assert len(session.pending_) == 0
    nxt = session.query(5)
    assert not set(nxt.tolist()) & set(session.labeled_indices_.tolist())
    ref = skal.LabelingSession(make_learner(), X, tmp_path / "ref")
    ref.teach(range(10), y[:10])
    run_rounds(ref, 1)
    np.testing.assert_array_equal(ref.query(5), nxt)
    np.testing.assert_allclose(
        ref.learner_.predict_proba(X), session.learner_.predict_proba(X), atol=1e-6
    )


def test_session_on_a_dataset(tmp_path):
    """A torch Dataset pool: rows are items; labels come from the person."""
    import torch
    from torch.utils.data import TensorDataset

    pool = TensorDataset(torch.from_numpy(X))
    session = skal.LabelingSession(make_learner(), pool, tmp_path)
    session.teach(range(10), y[:10])
    rows = session.query(5)
    session.teach(rows, y[rows])
    reopened = skal.LabelingSession(make_learner(), pool, tmp_path)
    np.testing.assert_allclose(
        reopened.learner_.predict_proba(pool),
        session.learner_.predict_proba(pool),
        atol=1e-6,
    )
    assert not set(reopened.query(5).tolist()) & set(reopened.labeled_indices_.tolist())
