"""LabelingSession under real faults: random SIGKILLs, a read-only directory,
a full disk, and two processes writing one directory.

Each fault runs in a forked child process (fast: nothing is imported again),
which reports through a pipe what the session acknowledged (a call that
returned). The parent then reopens the session and checks that nothing
acknowledged is lost, nothing is duplicated, and the session can always
query and teach again.
"""

import encodings.cp437  # noqa: F401  (zip files; "nobody" cannot import it later)
import os
import resource
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import skal

from .test_session import X, make_learner, y

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks child processes")


def answers(session):
    return dict(
        zip(session.labeled_indices_.tolist(), session.labels_.tolist(), strict=True)
    )


def in_child(body):
    """Fork; run ``body(write)`` in the child; return (pid, read end).

    The child writes lines to ``write`` and ends with ``os._exit`` (never
    returning into pytest).
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 0
        try:
            torch.set_num_threads(1)
            body(os.fdopen(write, "w", buffering=1))
        except BaseException as exc:
            os.write(2, f"child failed: {type(exc).__name__}: {exc}\n".encode())
            code = 1
        os._exit(code)
    os.close(write)
    return pid, os.fdopen(read)


def wait(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# ---------------------------------------------------------------- kill loop
def worker(directory, seed):
    """Random operations forever; each is announced, then acknowledged."""

    def body(out):
        rng = np.random.RandomState(seed)
        session = skal.LabelingSession(make_learner(), X, directory)
        out.write("open\n")
        while True:
            done = answers(session)
            kind = rng.choice(["query", "teach", "relabel", "unlabel", "fit"])
            if kind == "query" or not len(session.pending_):
                rows = session.query(int(rng.randint(1, 6)))
                out.write(f"ack query {' '.join(map(str, rows))}\n")
            elif kind == "teach":
                rows = session.pending_[: rng.randint(1, 4)]
                labels = y[rows]
                fit = bool(rng.rand() < 0.6)
                out.write(f"try label {_fmt(rows, labels)}\n")
                session.teach(rows, labels, fit=fit)
                out.write("ack\n")
            elif kind in ("relabel", "unlabel") and len(done) > 12:
                row = int(rng.choice(list(done)))
                fit = bool(rng.rand() < 0.5)
                if kind == "relabel":
                    label = int((done[row] + 1) % 3)
                    out.write(f"try relabel {_fmt([row], [label])}\n")
                    session.relabel([row], [label], fit=fit)
                else:
                    out.write(f"try unlabel {_fmt([row], [-1])}\n")
                    session.unlabel([row], fit=fit)
                out.write("ack\n")
            else:
                out.write("try fit\n")
                session.fit()
                out.write("ack\n")

    return body


def _fmt(rows, labels):
    return " ".join(f"{int(r)}:{int(v)}" for r, v in zip(rows, labels, strict=True))


def _apply(state, line):
    op, *pairs = line.split()
    state = dict(state)
    for pair in pairs:
        row, label = map(int, pair.split(":"))
        if op == "unlabel":
            state.pop(row)
        else:
            state[row] = label
    return state


def test_random_sigkills_lose_nothing_acknowledged(tmp_path):
    """At least 50 SIGKILLs at random moments, across query, teach, fit and
    training. After each, the reopened session holds exactly the
    acknowledged answers (or those plus the one call in flight), its log
    holds no row labelled twice, and it can query and teach."""
    rng = np.random.RandomState(0)
    torch.set_num_threads(1)
    acked, kills, phases = {}, 0, set()
    deadline = time.monotonic() + 240  # bounded, whatever the machine's load
    while kills < 50 and time.monotonic() < deadline:
        pid, reader = in_child(worker(tmp_path, seed=kills))
        assert reader.readline() == "open\n"  # opening (and catching up) done
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        assert wait(pid) == -signal.SIGKILL
        kills += 1
        in_flight = None
        for line in reader.read().splitlines():
            if line.startswith("try "):
                in_flight = line[4:]
                phases.add(in_flight.split()[0])
            elif line == "ack" and in_flight is not None:
                acked = _apply(acked, in_flight) if in_flight != "fit" else acked
                in_flight = None
        reader.close()
        session = skal.LabelingSession(make_learner(), X, tmp_path)
        now = answers(session)
        allowed = [acked]
        if in_flight is not None and in_flight != "fit":
            allowed.append(_apply(acked, in_flight))  # committed, not acked
        assert now in allowed, (kills, in_flight)
        acked = now
        # the log: a row is labelled only when it has no answer
        have = set()
        for h in session.history():
            if h["op"] == "label":
                assert h["index"] not in have
                have.add(h["index"])
            elif h["op"] == "unlabel":
                have.remove(h["index"])
        assert not set(session.pending_.tolist()) & set(now)
        del session
    assert kills >= 50, f"only {kills} kills before the deadline"
    assert phases >= {"label", "fit"}
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    rows = session.query(3)
    session.teach(rows, y[rows])
    session.fit()
    assert not session.needs_fit
    assert answers(session) == acked | {int(r): int(y[r]) for r in rows}


# ------------------------------------------------------ a read-only directory
@pytest.fixture
def open_dir():
    """A directory that 'nobody' can reach (pytest's are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="skal-session-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="drops root's rights to 'nobody'")
def test_a_read_only_directory_gives_a_clear_error_and_loses_nothing(open_dir):
    tmp_path = open_dir
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])

    def body(out):
        os.setegid(65534)
        os.seteuid(65534)  # 'nobody': the directory is read-only to it
        child = skal.LabelingSession(make_learner(), X, tmp_path)
        try:
            child.teach([50, 51], y[[50, 51]])
        except OSError as exc:
            out.write(f"error {exc}\n")
        out.write(f"labelled {len(child.labeled_indices_)}\n")
        os.seteuid(0)  # the directory is writable again
        os.setegid(0)
        child.teach([50, 51], y[[50, 51]])
        out.write("ack\n")

    pid, reader = in_child(body)
    lines = reader.read().splitlines()
    assert wait(pid) == 0, lines
    assert "could not record the answers" in lines[0]
    assert "permission denied" in lines[0] and "answer again" in lines[0]
    assert lines[1:] == ["labelled 10", "ack"]
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    assert set(answers(reopened)) == {*range(10), 50, 51}


# ------------------------------------------------------------- a full disk
def test_a_full_disk_gives_a_clear_error_and_loses_nothing(tmp_path):
    session = skal.LabelingSession(make_learner(), X, tmp_path)
    session.teach(range(10), y[:10])
    size = (tmp_path / "log.jsonl").stat().st_size

    def body(out):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        # room for part of one more record: the write fails part-way
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))
        child = skal.LabelingSession(make_learner(), X, tmp_path)
        try:
            child.teach([50, 51], y[[50, 51]], fit=False)
        except OSError as exc:
            out.write(f"error {exc}\n")
        out.write(f"labelled {len(child.labeled_indices_)}\n")
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
        child.teach([50, 51], y[[50, 51]], fit=False)
        out.write("ack\n")
        # the answer fits, the weights do not: recorded, training reports it
        resource.setrlimit(
            resource.RLIMIT_FSIZE, ((tmp_path / "log.jsonl").stat().st_size + 400, hard)
        )
        try:
            child.teach([52], y[[52]])
        except OSError as exc:
            out.write(f"training {type(exc).__name__} {exc.__notes__}\n")

    pid, reader = in_child(body)
    lines = reader.read().splitlines()
    assert wait(pid) == 0, lines
    assert "could not record the answers" in lines[0]
    assert "file size limit" in lines[0]
    assert lines[1:3] == ["labelled 10", "ack"]
    assert lines[3].startswith("training OSError") and "recorded" in lines[3]
    reopened = skal.LabelingSession(make_learner(), X, tmp_path)
    assert set(answers(reopened)) == {*range(10), 50, 51, 52}
    assert reopened.learner_.n_labeled_ == 13  # trained at reopening


# -------------------------------------------- two processes, one directory
def test_two_processes_on_one_directory_merge_their_answers(tmp_path):
    skal.LabelingSession(make_learner(), X, tmp_path).teach(range(10), y[:10])

    def labeller(rows):
        def body(out):
            session = skal.LabelingSession(make_learner(), X, tmp_path)
            for r in rows:
                session.teach([r], [y[r]], fit=bool(r % 7 == 0))
                out.write(f"ack {r}\n")

        return body

    children = [
        in_child(labeller(range(20, 60, 2))),
        in_child(labeller(range(21, 61, 2))),
    ]
    acked = set()
    for pid, reader in children:
        acked |= {int(line.split()[1]) for line in reader.read().splitlines()}
        assert wait(pid) == 0
    assert acked == set(range(20, 60))
    final = skal.LabelingSession(make_learner(), X, tmp_path)
    assert answers(final) == {i: int(y[i]) for i in [*range(10), *range(20, 60)]}
    assert len(final.history()) == 10 + 40
