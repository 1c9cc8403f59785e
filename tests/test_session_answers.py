"""LabelingSession: what a person answers is validated, kept and never lost.

Cold start, recording without training, corrections, several writers, the
pool's fingerprint, damaged files, failed writes.
"""

import errno
import fcntl
import json
import os
import pickle
import stat
import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch.utils.data import Dataset, TensorDataset

import skal
from skal import _persistence
from skal.model_selection import CheckpointError

from .test_session import X, make_learner, y


def log_bytes(directory):
    return (directory / "log.jsonl").read_bytes()


def answers(session):
    return dict(
        zip(session.labeled_indices_.tolist(), session.labels_.tolist(), strict=True)
    )


# ------------------------------------------------------------- cold start
def test_query_before_any_label_is_a_reproducible_first_batch(tmp_path):
    a = skal.LabelingSession(make_learner(), X, tmp_path / "a")
    first = a.query(8)
    assert len(np.unique(first)) == 8 and a.model_version_ is None
    b = skal.LabelingSession(make_learner(), X, tmp_path / "b")
    np.testing.assert_array_equal(b.query(8), first)  # same random_state
    other = make_learner().set_params(random_state=1)
    c = skal.LabelingSession(other, X, tmp_path / "c")
    assert set(c.query(8).tolist()) != set(first.tolist())
    a.teach(first, y[first])
    assert a.model_version_ is not None
    after = a.query(8)
    assert not set(after.tolist()) & set(first.tolist())


def test_query_renew_discards_the_open_query(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    rows = session.query(5)
    np.testing.assert_array_equal(session.query(5), rows)
    renewed = session.query(3, renew=True)
    assert len(renewed) == 3
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    np.testing.assert_array_equal(reopened.pending_, renewed)


# ------------------------------------------ recording without training
def test_teach_without_fit_records_and_fit_trains(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    version = session.model_version_
    session.teach([20, 21, 22], y[[20, 21, 22]], fit=False)
    assert session.model_version_ == version  # the weights did not change
    assert session.needs_fit and session.learner_.n_labeled_ == 10
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    assert reopened.needs_fit and reopened.model_version_ == version
    reopened.fit()
    assert not reopened.needs_fit
    assert reopened.learner_.n_labeled_ == 13
    assert reopened.model_version_ != version
    same = reopened.model_version_
    reopened.fit()  # nothing new: the model and its version stay
    assert reopened.model_version_ == same
    # the first session object sees the other's model at its next operation
    session.query(2)
    assert session.model_version_ == same


def test_model_version_names_the_weights(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    weights = tmp_path / "model" / f"weights-{session.model_version_}.pt"
    assert _persistence.file_digest(weights).startswith(session.model_version_)
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    assert reopened.model_version_ == session.model_version_


# ------------------------------------------------------------ corrections
def test_relabel_and_unlabel_keep_every_answer_and_train_on_the_latest(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10], annotator="ann")
    wrong = (y[3] + 1) % 3
    session.relabel([3], [wrong], annotator="bob")
    session.unlabel([4])
    expected = {i: int(y[i]) for i in range(10) if i != 4}
    expected[3] = int(wrong)
    assert answers(session) == expected
    # trained on the current answers, in first-labelled order
    np.testing.assert_array_equal(session.learner_.y_labeled_, list(expected.values()))
    ops = [(h["op"], h["index"], h["annotator"]) for h in session.history()]
    assert ops[:10] == [("label", i, "ann") for i in range(10)]
    assert ops[10:] == [("relabel", 3, "bob"), ("unlabel", 4, None)]
    assert 4 in session.unlabeled_indices
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    assert answers(reopened) == expected
    assert reopened.history() == session.history()
    np.testing.assert_allclose(
        reopened.learner_.predict_proba(X), session.learner_.predict_proba(X)
    )
    # a withdrawn row may be labelled again, and goes to the end
    reopened.teach([4], [y[4]])
    assert reopened.labeled_indices_[-1] == 4


# ---------------------------------------- defect 1: one commit per answer
def test_a_torn_last_record_is_no_answer_and_is_cut_off(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    rows = session.query(3)
    good = log_bytes(tmp_path)
    record = json.dumps({"seq": 99, "op": "label", "rows": [int(rows[0])]})
    with open(tmp_path / "log.jsonl", "ab") as fh:  # killed mid-write
        fh.write(record[:25].encode())
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    np.testing.assert_array_equal(reopened.query(3), rows)  # still open
    reopened.teach(rows, y[rows])
    text = log_bytes(tmp_path)
    assert text.startswith(good) and record[:25].encode() not in text
    assert answers(skal.LabelingSession(make_learner(), X, tmp_path)) == {
        int(i): int(y[i]) for i in [*range(10), *rows]
    }


# ------------------------------ defect 2: validated before anything is written
@pytest.mark.parametrize(
    "labels, error, match",
    [
        (["3"], TypeError, r"labels must all be of one kind.*'int', 'str'"),
        ([7], ValueError, r"labels \[7\] are not among the learner's classes"),
        ([None], TypeError, "labels must be integers, strings or floats"),
        ([True], TypeError, "labels must be integers, strings or floats"),
        ([float("nan")], ValueError, "labels must be finite"),
        ([0, 1], ValueError, "1 indices but 2 labels"),
    ],
)
def test_bad_labels_are_refused_before_they_are_written(tmp_path, labels, error, match):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    before = log_bytes(tmp_path)
    with pytest.raises(error, match=match):
        session.teach([50], labels)
    assert log_bytes(tmp_path) == before
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    assert answers(reopened) == answers(session)
    assert reopened.labels_.dtype.kind == "i"


def test_a_new_class_needs_declared_classes(tmp_path):
    learner = skal.ActiveLearner(LogisticRegression(), random_state=0)
    session = skal.LabelingSession(learner, X, tmp_path)
    session.teach(range(6), [0, 1, 0, 1, 0, 1])
    before = log_bytes(tmp_path)
    with pytest.raises(ValueError, match=r"labels \[2\] are not among the classes"):
        session.teach([50], [2])
    assert log_bytes(tmp_path) == before


def test_one_class_is_recorded_and_training_waits(tmp_path):
    learner = skal.ActiveLearner(LogisticRegression(), random_state=0)
    session = skal.LabelingSession(learner, X, tmp_path)
    with pytest.warns(RuntimeWarning, match="training waits for a second class"):
        session.teach([0, 1], ["cat", "cat"])
    assert session.model_version_ is None and session.needs_fit
    session.teach([2], ["dog"])
    assert session.model_version_ is not None
    assert list(session.learner_.classes_) == ["cat", "dog"]


def test_training_that_fails_keeps_the_answers(tmp_path, monkeypatch):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(skal.ActiveLearner, "teach", broken)
    with pytest.raises(RuntimeError, match="out of memory") as info:
        session.teach([50], [y[50]])
    assert "answers are recorded" in str(info.value.__notes__)
    with pytest.warns(RuntimeWarning, match="could not train on its answers"):
        reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    assert 50 in answers(reopened) and reopened.needs_fit
    monkeypatch.undo()
    reopened.fit()
    assert reopened.learner_.n_labeled_ == 11


# --------------------------------------------- defect 3: two writers, one log
def test_two_session_objects_on_one_directory_see_each_other(tmp_path):
    a = skal.LabelingSession(make_learner(), X, tmp_path)
    b = skal.LabelingSession(make_learner(), X, tmp_path)
    a.teach(range(10), y[:10], fit=False)
    b.teach([50], [y[50]], fit=False)  # b reads a's answers first
    a.teach([51], [y[51]], fit=False)
    with pytest.raises(ValueError, match=r"rows \[50\] already have an answer"):
        a.teach([50], [y[50]])
    assert answers(a) == answers(b) | {51: int(y[51])}
    final = skal.LabelingSession(make_learner(), X, tmp_path)
    assert set(answers(final)) == {*range(10), 50, 51}


def test_a_held_directory_raises_after_the_timeout(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path, lock_timeout=0.2)
    fd = os.open(tmp_path / "lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process's operation
    try:
        with pytest.raises(skal.SessionLockedError, match="held by another"):
            session.teach([1], [y[1]])
    finally:
        os.close(fd)
    session.teach([1], [y[1]])
    assert answers(session) == {1: int(y[1])}


# ---------------------------------------- defect 4: a failed write recorded nothing
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_records_nothing_and_the_answer_can_be_given_again(
    tmp_path, monkeypatch, code
):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    real_write = os.write

    def failing(fd, data):
        real_write(fd, bytes(data)[:7])  # a part reaches the disk
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(OSError, match="nothing was recorded: answer again"):
        session.teach([50, 51], y[[50, 51]])
    monkeypatch.undo()
    assert 50 not in answers(session)
    session.teach([50, 51], y[[50, 51]])  # the same answer, given again
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    assert {50, 51} <= set(answers(reopened))


# ---------------------------------------------- defect 7: the pool's fingerprint
def test_a_reordered_or_different_pool_is_refused(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    perm = np.random.RandomState(0).permutation(len(X))
    for other in (X[perm], X + 1):
        with pytest.raises(ValueError, match="made for another pool of 200 rows"):
            skal.LabelingSession(make_learner(), other, tmp_path)
    skal.LabelingSession(make_learner(), X.copy(), tmp_path)  # the same pool


class NoisyDataset(Dataset):
    """Items through a random transform: other bytes at every read."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return torch.from_numpy(self.data[i]) + 0.01 * torch.randn(X.shape[1])


def test_a_pool_with_a_random_transform_opens_again(tmp_path):
    session = skal.LabelingSession(make_learner(), NoisyDataset(X), tmp_path)
    session.teach(range(10), y[:10])
    skal.LabelingSession(make_learner(), NoisyDataset(X), tmp_path)


def test_an_image_folder_is_fingerprinted_by_its_files(tmp_path):
    from PIL import Image
    from torchvision.datasets import ImageFolder

    root = tmp_path / "images"
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (4, 4), color=i).save(root / c / f"{i}.png")
    fingerprint = skal.session._fingerprint(ImageFolder(root))
    assert fingerprint == skal.session._fingerprint(ImageFolder(root))
    (root / "b" / "0.png").rename(root / "b" / "9.png")
    assert fingerprint != skal.session._fingerprint(ImageFolder(root))


# ----------------------------------------- defect 8: damaged or edited files
def test_an_edited_log_is_refused(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    lines = log_bytes(tmp_path).decode().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["labels"][0] = (record["labels"][0] + 1) % 3  # a hand edit
    lines[1] = json.dumps(record) + "\n"
    (tmp_path / "log.jsonl").write_text("".join(lines))
    with pytest.raises(CheckpointError, match="line 2 of .* does not continue"):
        skal.LabelingSession(make_learner(), X, tmp_path)


def test_a_deleted_record_is_refused(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(5), y[:5])
    session.teach(range(5, 10), y[5:10])
    lines = log_bytes(tmp_path).decode().splitlines(keepends=True)
    (tmp_path / "log.jsonl").write_text(lines[0] + lines[2])
    with pytest.raises(CheckpointError, match="does not continue the records"):
        skal.LabelingSession(make_learner(), X, tmp_path)


def test_an_edited_model_index_is_refused(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    path = tmp_path / "model" / "state.json"
    state = json.loads(path.read_text())
    state["labels"][0] = 2
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="modified after it was written"):
        skal.LabelingSession(make_learner(), X, tmp_path)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/skal-pwned",))


def test_a_malicious_weights_file_is_refused_with_checkpoint_error(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    path = tmp_path / "model" / f"weights-{session.model_version_}.pt"
    torch.save({"module": Payload()}, path, pickle_module=pickle)
    state_path = tmp_path / "model" / "state.json"
    state = json.loads(state_path.read_text())
    state.pop("checksum")
    state["files"][path.name] = _persistence.file_digest(path)  # a forged index
    state["checksum"] = _persistence.json_digest(state)
    state_path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="is not a file of tensors"):
        skal.LabelingSession(make_learner(), X, tmp_path)
    assert not os.path.exists("/tmp/skal-pwned")


# ---------------------------------------------- defect 10: float indices
@pytest.mark.parametrize("indices", [[30.7, 41.2], [30.0], np.array([1.5]), ["3"]])
def test_non_integer_indices_are_refused(tmp_path, indices):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    with pytest.raises(TypeError, match="indices must be integers"):
        session.teach(indices, [0] * len(indices))
    assert len(session.labeled_indices_) == 0


# ------------------------------------- defect 17: a memmap pool is not copied
def test_a_memory_mapped_pool_is_not_copied_by_query(tmp_path):
    n, d = 20_000, 128  # 10 MB of float32
    data = np.lib.format.open_memmap(
        tmp_path / "pool.npy", mode="w+", dtype=np.float32, shape=(n, d)
    )
    rng = np.random.RandomState(0)
    data[:] = rng.randn(n, d)
    data.flush()
    pool = np.load(tmp_path / "pool.npy", mmap_mode="r")
    labels = rng.randint(3, size=n)
    net = skal.NeuralNetClassifier(
        skal.nets.MLP, module__hidden_units=(8,), max_epochs=1, batch_size=16
    )
    learner = skal.ActiveLearner(net, strategy="entropy", classes=[0, 1, 2])
    session = skal.LabelingSession(learner, pool, tmp_path / "session")
    session.teach(range(30), labels[:30])
    tracemalloc.start()
    picked = session.query(10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(picked) == 10
    assert peak < pool.nbytes / 4, peak  # no whole-pool copy


# ------------------------------------ defect 19: the directory is fsynced too
def test_durable_writes_fsync_the_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def recording(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    _persistence.write_file(tmp_path / "f", lambda fh: fh.write(b"x"))
    assert synced == [False, True]  # the file, then its directory after the rename


# ------------------------------------------------------------- other pools
def test_a_tensor_dataset_pool_with_corrections(tmp_path):
    pool = TensorDataset(torch.from_numpy(X))
    session = skal.LabelingSession(make_learner(), pool, tmp_path)
    first = session.query(10)
    session.teach(first, y[first])
    session.relabel(first[:1], [(y[first[0]] + 1) % 3])
    reopened = skal.LabelingSession(make_learner(), pool, tmp_path)
    np.testing.assert_allclose(
        reopened.learner_.predict_proba(pool), session.learner_.predict_proba(pool)
    )


def test_a_session_of_skal_0_is_carried_over(tmp_path):
    """A directory written by the first session format: its answers and open
    query come into the log, and the model is trained on them again."""
    (tmp_path / "labels.json").write_text(
        json.dumps(
            {
                "format": 1,
                "n_pool": 200,
                "n_first": 10,
                "rows": [[i, int(y[i])] for i in range(10)],
            }
        )
    )
    (tmp_path / "pending.json").write_text(json.dumps({"rows": [60, 61]}))
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    assert answers(session) == {i: int(y[i]) for i in range(10)}
    np.testing.assert_array_equal(session.query(5), [60, 61])
    assert session.learner_.n_labeled_ == 10


@pytest.mark.parametrize("method", ["random", "kmeans++", "kcenter", "typiclust"])
def test_cold_start_methods_pick_among_the_unlabelled_rows(tmp_path, method):
    session = skal.LabelingSession(make_learner(), X, tmp_path, cold_start=method)
    session.teach([0, 1, 2], y[:3], fit=False)  # answers, no model yet
    first = session.query(6)
    assert len(set(first.tolist())) == 6 and not {0, 1, 2} & set(first.tolist())
    again = skal.LabelingSession(make_learner(), X, tmp_path / "b", cold_start=method)
    again.teach([0, 1, 2], y[:3], fit=False)
    np.testing.assert_array_equal(again.query(6), first)


def test_cold_start_in_a_given_embedding(tmp_path):
    # two tight clusters in the given features: k-center must pick one
    # row of each (the raw features would not tell them apart)
    embedding = np.zeros((len(X), 2))
    embedding[100:, 0] = 10.0
    session = skal.LabelingSession(
        make_learner(), X, tmp_path, cold_start="kcenter",
        cold_start_embedding=embedding,
    )  # fmt: skip
    picked = session.query(2)
    assert sorted(p >= 100 for p in picked) == [False, True]
    with pytest.raises(ValueError, match="cold_start_embedding has 5 rows"):
        skal.LabelingSession(
            make_learner(), X, tmp_path / "b", cold_start_embedding=np.zeros((5, 2))
        ).query(2)


def test_should_stop_shows_the_criteria_the_trained_model(tmp_path):
    from skal.stopping import Budget, OverallUncertainty

    session = skal.LabelingSession(make_learner(), X, tmp_path)
    budget = Budget(max_labels=15)
    assert session.should_stop([budget]) == (False, "no model has been trained yet")
    session.teach(range(10), y[:10])
    stop, reason = session.should_stop([budget, OverallUncertainty(threshold=0.0)])
    assert not stop
    session.teach(range(10, 16), y[10:16])
    stop, reason = session.should_stop([budget])
    assert stop and "Budget" in reason


def _stopping_run(directory, reopen):
    """Four rounds of answers, asking StabilizingPredictions and DeltaF
    after each; ``reopen`` builds a new session and new criteria each time."""
    from skal.stopping import DeltaF, MaxConfidence, StabilizingPredictions

    def criteria():
        return [
            StabilizingPredictions(window_size=2, stop_set_size=40, random_state=0),
            DeltaF(window_size=2, stop_set_size=40, random_state=1),
            MaxConfidence(threshold=0.99),
        ]

    session, listed = skal.LabelingSession(make_learner(), X, directory), criteria()
    decisions = []
    for start in range(0, 40, 10):
        if reopen:
            session = skal.LabelingSession(make_learner(), X, directory)
            listed = criteria()
        rows = np.arange(start, start + 10)
        session.teach(rows, y[rows])
        decisions.append(session.should_stop(listed))
    return decisions, listed


def test_stopping_windows_continue_in_a_reopened_session(tmp_path):
    kept, kept_criteria = _stopping_run(tmp_path / "kept", reopen=False)
    reopened, reopened_criteria = _stopping_run(tmp_path / "reopened", reopen=True)
    assert reopened == kept
    for a, b in zip(kept_criteria, reopened_criteria, strict=True):
        assert b.n_updates_ == a.n_updates_ == 4
        np.testing.assert_allclose(b.history_, a.history_)
    kappa, delta, _ = reopened_criteria
    np.testing.assert_allclose(kappa.kappas_, kept_criteria[0].kappas_)
    # the stop set is read back from the pool rows it was drawn from
    np.testing.assert_array_equal(kappa.X_stop_, kept_criteria[0].X_stop_)
    assert not np.array_equal(kappa.X_stop_, delta.X_stop_)


def test_stopping_state_is_per_configuration_and_checked(tmp_path):
    from skal.stopping import StabilizingPredictions

    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    session.should_stop([StabilizingPredictions(window_size=2, stop_set_size=40)])
    session.teach(range(10, 20), y[10:20])
    other = StabilizingPredictions(window_size=3, stop_set_size=40)
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    reopened.should_stop([other])
    assert other.n_updates_ == 1  # configured otherwise: afresh
    same = StabilizingPredictions(window_size=2, stop_set_size=40)
    for path in (tmp_path / "stopping").iterdir():
        record = json.loads(path.read_text())
        record["state"]["n_updates_"] = {"int": 7}  # edited by hand
        path.write_text(json.dumps(record))
    with pytest.warns(RuntimeWarning, match="unreadable.*checksum"):
        skal.LabelingSession(make_learner(), X, tmp_path).should_stop([same])
    assert same.n_updates_ == 1


def test_array_pools_are_read_by_one_rule(tmp_path):
    """A session and a simulation read an array pool the same way: lazily for
    a network (any kept dtype, memory-mapped or not), as the array itself for
    a pipeline ending in a network, whose first steps need the array."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from torch.utils.data import Subset

    from skal._data import ArrayRows
    from skal.model_selection._simulation import pool_rows

    session = skal.LabelingSession(make_learner(), X, tmp_path / "net")
    session.teach(range(10), y[:10])
    rows = session.learner_.X_labeled_
    assert isinstance(rows, Subset) and isinstance(rows.dataset, ArrayRows)
    np.testing.assert_array_equal(np.stack([rows[i] for i in range(10)]), X[:10])
    assert isinstance(pool_rows(make_learner(), X), ArrayRows)

    net = make_learner().estimator
    piped = skal.ActiveLearner(
        make_pipeline(StandardScaler(), net), classes=[0, 1, 2], random_state=0
    )
    session = skal.LabelingSession(piped, X, tmp_path / "pipeline")
    session.teach(range(10), y[:10])
    assert isinstance(session.learner_.X_labeled_, np.ndarray)
    assert pool_rows(piped, X) is X


def test_asking_again_without_a_new_model_writes_no_stopping_state(tmp_path):
    from skal.stopping import StabilizingPredictions

    session = skal.LabelingSession(make_learner(), X, tmp_path)
    criterion = StabilizingPredictions(window_size=2, stop_set_size=40)
    session.teach(range(10), y[:10])
    first = session.should_stop([criterion])

    def inodes():
        return {p.name: p.stat().st_ino for p in (tmp_path / "stopping").iterdir()}

    written = inodes()
    assert session.should_stop([criterion]) == first
    assert inodes() == written  # the same files: not rewritten
    session.teach(range(10, 20), y[10:20])
    session.should_stop([criterion])
    assert criterion.n_updates_ == 2
    assert inodes().keys() == written.keys() and inodes() != written
