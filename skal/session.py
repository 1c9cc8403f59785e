"""Live labelling sessions: a person labels what the learner queries, over days.

A session directory holds three things:

- ``log.jsonl``, the answers: an append-only log, one JSON record per line
  (the session's header, every query, every answer, correction and
  withdrawal, every request to train). Each record carries the hash of the
  one before it, so an edited, reordered or truncated log is refused rather
  than read as other answers. A record is committed by one ``write`` of its
  line and an ``fsync``: a process killed mid-write leaves an incomplete last
  line, which is not an acknowledged answer and is cut off by the next
  writer.
- ``model/``, the model trained on a prefix of that log: a ``state.json``
  index (the log position trained through, the labelled rows and labels in
  training order, the learner's random state and strategy state, SHA-256
  checksums of every file, a checksum of its own), the weights
  (``torch.load(weights_only=True)``) and arrays (``allow_pickle=False``).
  Nothing is unpickled on resume.
- ``lock``, which every operation holds (``fcntl.flock``) while it reads the
  log's new records and appends its own, so two session objects or two
  processes on one directory see each other's answers and never write over
  them.

Why one log instead of one file per kind of state: a single append is the
commit point of an answer and of its effect on the open query, so no crash
can leave an answered row in the open query, or an answer half-recorded.
Why the model is separate: it can always be rebuilt from the answers (at
worst by training again), so the log is the only thing that must never be
lost.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import numbers
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import check_random_state
from skorch import NeuralNet

from ._criteria_store import CriteriaStore
from ._data import (
    array_pool,
    is_torch_dataset,
    n_samples,
    split_item,
    take,
    to_array,
)
from ._persistence import (
    CheckpointError,
    file_digest,
    fsync_directory,
    json_digest,
    learner_state,
    load_weights,
    restore_arguments,
    state_dicts,
    strategy_state,
    write_file,
)
from ._utils import final_step
from .coldstart import LABEL_FREE_METHODS, select_label_free
from .stopping import should_stop

_LOG = "log.jsonl"
_LOCK = "lock"
_MODEL = "model"
_STATE = "state.json"
_FORMAT = 2
_OPS = ("open", "query", "label", "relabel", "unlabel", "fit")
# rows hashed into the pool's fingerprint (evenly spaced, ends included)
_FINGERPRINT_ROWS = 32


class SessionLockedError(RuntimeError):
    """Another session object or process holds the session's directory.

    Every operation of a :class:`LabelingSession` takes the directory's lock
    for as long as it reads and writes the log (training runs outside it).
    This error means the lock was not free within ``lock_timeout`` seconds.

    Examples
    --------
    >>> import skal
    >>> issubclass(skal.SessionLockedError, RuntimeError)
    True
    """


class LabelingSession:
    """Active learning with a person as the oracle, saved to a directory.

    The session owns a fixed pool and the answers given for its rows.
    :meth:`query` proposes rows to label, :meth:`teach` records answers and,
    by default, trains on them; :meth:`relabel` and :meth:`unlabel` take
    corrections. Everything is kept in ``directory``, so the session can stop
    at any moment (a closed laptop, a crash, a killed web server) and resume
    by creating it again with the same arguments:

    - an answer is validated, then appended durably to an append-only log
      before the call returns and before any training on it; a call that
      returned is never lost, and a call that raised recorded nothing;
    - an open query is journaled in the same log before it is returned;
      until its rows are answered, :meth:`query` returns them again;
    - the model is committed after each training with the log position it
      was trained through; if the process dies during training, the
      reopened session trains on what was asked;
    - several session objects or processes may share a directory: each
      operation locks it, reads the answers the others appended, and appends
      its own.

    Before any answer, :meth:`query` picks a label-free first batch (the
    ``cold_start`` method). Training continues from the current weights, as
    :meth:`ActiveLearner.teach` does, after new answers and after
    corrections (:meth:`relabel`, :meth:`unlabel`) alike: the model then
    trains on the corrected answers. Starting from scratch would forget
    what the earlier rounds' training taught: in the gallery example
    (``examples/run_labeling_session.py``, digits, 130 answers, 20 epochs
    per training), two corrections then training from scratch gave a test
    accuracy of 0.563 against 0.913 before them; from the current weights,
    0.900.

    Labels must be integers, strings or finite floats, all of one kind (and
    among the learner's ``classes`` when those are declared).

    Parameters
    ----------
    learner : ActiveLearner
        The unfitted learner; cloned. Declare ``classes`` when the first
        labelled rows may not show every class.
    pool : array-like of shape (n_pool, ...) or torch Dataset
        Every row that may be labelled; indices refer to it. It must be the
        same pool, in the same order, each time the session is opened: its
        length, shape and a sample of its rows are fingerprinted, and a
        different pool is refused.
    directory : path-like
        Where the session lives (created if needed).
    cold_start : {"typiclust", "kmeans++", "kcenter", "random"}, \
default="typiclust"
        How :meth:`query` picks rows before the first training (see
        :func:`skal.coldstart.select_label_free`), reproducibly under the
        learner's ``random_state``: the most typical row of each of ``n``
        k-means clusters (Hacohen et al., 2022), k-means++ seeding, k-center
        greedy, or a uniform draw, in the embedding of the learner's
        untrained network (raw features for other classifiers) or in
        ``cold_start_embedding``. TypiClust is the default because it gave
        the best first batches in skal's label-efficiency study (AULC with
        margin sampling on digits 0.912 against 0.893 for a random first
        batch, on Fashion-MNIST 0.652 against 0.630; 3 seeds).
    cold_start_embedding : array-like, callable, transformer or None, \
default=None
        The features the cold start selects in: an array of shape
        (n_pool, n_features), or a feature extractor applied to the pool's
        rows (a pretrained or self-supervised network in a function, a
        fitted PCA). None uses the untrained network's embedding.
    lock_timeout : float, default=10.0
        Seconds an operation waits for another session object or process
        that holds the directory before it raises
        :class:`SessionLockedError`.

    Attributes
    ----------
    learner_ : ActiveLearner
        The learner, fitted once the session has trained.
    labeled_indices_ : ndarray of int
        Pool rows with an answer, in the order they were first labelled.
    labels_ : ndarray
        Their current (latest) labels.
    pending_ : ndarray of int
        Rows of the open query not answered yet (empty when none).
    model_version_ : str or None
        Names the model's weights: a digest of the saved weights (of the
        labelled set, for estimators without weights). It changes exactly
        when the weights change; None before the first training.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> X, y = load_digits(return_X_y=True)
    >>> learner = skal.ActiveLearner(
    ...     LogisticRegression(max_iter=300), classes=list(range(10)),
    ...     random_state=0,
    ... )
    >>> directory = tempfile.mkdtemp()
    >>> session = skal.LabelingSession(learner, X, directory)
    >>> first = session.query(20)             # label-free: nothing is known
    >>> session.teach(first, y[first])
    >>> rows = session.query(5)                # shown to the person
    >>> session = skal.LabelingSession(learner, X, directory)  # reopened
    >>> bool((session.query(5) == rows).all())  # the open query, unchanged
    True
    >>> session.teach(rows, y[rows], fit=False)  # recorded, not trained yet
    >>> session.relabel(rows[:1], [y[rows[0]]])  # a correction, then training
    >>> len(session.labeled_indices_)
    25
    """

    def __init__(
        self,
        learner,
        pool,
        directory,
        *,
        cold_start="typiclust",
        cold_start_embedding=None,
        lock_timeout=10.0,
    ):
        if cold_start not in LABEL_FREE_METHODS:
            raise ValueError(
                f"cold_start must be one of {LABEL_FREE_METHODS}, got {cold_start!r}"
            )
        if (
            not isinstance(lock_timeout, numbers.Real)
            or isinstance(lock_timeout, bool)
            or not lock_timeout >= 0
        ):
            raise ValueError(
                f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}"
            )
        self.learner = learner
        self.pool = pool
        self.directory = Path(directory)
        self.cold_start = cold_start
        self.cold_start_embedding = cold_start_embedding
        self.lock_timeout = float(lock_timeout)
        self.learner_ = clone(learner)
        self.model_version_ = None
        self._n_pool = n_samples(pool)
        # read once: it reads 32 rows (twice each for a Dataset's items)
        self._pool_fingerprint = _fingerprint(pool)
        # what the log said, up to the byte offset read so far
        self._offset = 0
        self._seq = -1
        self._hash = ""
        self._answers: dict = {}  # row -> label, in first-labelled order
        self._open: list = []  # the open query's rows, in query order
        self._fit_seq = -1  # the last record that asked for training
        self._history: list = []
        self._n_queries = 0
        # the model: the log position it was trained through, and on what
        self._model_seq = -1
        self._trained: tuple = ((), ())
        self._n_initial = 0
        self._lock_depth = 0
        self._lock_fd = None
        self._criteria = CriteriaStore(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _write_error(
                self.directory, "create the session directory", exc
            ) from exc
        with self._locked():
            self._sync(model=False)
            if self._seq < 0:
                self._create()
            self._check_header()
            self._check_model_changed()
        if self._fit_seq > self._model_seq:
            # training was asked for and did not finish (a crash)
            self._train(catch=True)

    # ------------------------------------------------------------- public
    @property
    def labeled_indices_(self) -> np.ndarray:
        return np.fromiter(self._answers, dtype=np.int64, count=len(self._answers))

    @property
    def labels_(self) -> np.ndarray:
        return np.asarray(list(self._answers.values()))

    @property
    def pending_(self) -> np.ndarray:
        return np.asarray(self._open, dtype=np.int64)

    @property
    def unlabeled_indices(self) -> np.ndarray:
        """Pool rows without an answer, in pool order."""
        mask = np.ones(self._n_pool, dtype=bool)
        mask[self.labeled_indices_] = False
        return np.flatnonzero(mask)

    @property
    def needs_fit(self) -> bool:
        """Whether answers were recorded that the model was not trained on."""
        return self._target() != self._trained

    def history(self) -> list:
        """Every answer ever recorded, oldest first (the log keeps them all).

        Returns
        -------
        records : list of dict
            One dict per row and operation: ``op`` (``"label"``,
            ``"relabel"`` or ``"unlabel"``), ``index``, ``label`` (None for
            ``"unlabel"``), ``time`` (seconds since the epoch) and
            ``annotator`` (or None).
        """
        return [dict(r) for r in self._history]

    def query(self, n=1, *, renew=False):
        """Rows to label next: the open query's unanswered rows, or new ones.

        Before any training, the rows come from the label-free
        ``cold_start`` method; afterwards from the learner's strategy, with
        the model as last trained.

        Parameters
        ----------
        n : int, default=1
            How many rows a new query proposes (an open query is returned
            as it is).
        renew : bool, default=False
            Discard the open query and query afresh (after a retrain, say).

        Returns
        -------
        indices : ndarray of int
            Pool row indices, most informative first, never ones that have
            an answer.
        """
        if not isinstance(renew, bool | np.bool_):
            raise TypeError(f"renew must be a bool, got {renew!r}")
        if not isinstance(n, numbers.Integral) or isinstance(n, bool):
            raise TypeError(f"n must be an integer, got {n!r}")
        # Scored outside the lock, so that other writers (a labelling tool's
        # webhooks) are not held for the seconds a large pool takes; then
        # journaled under it, unless the answers or the model changed
        # meanwhile, in which case it is scored again.
        for attempt in range(3):
            with self._locked():
                self._sync()
                if self._open and not renew:
                    return self.pending_
                seen = (self._seq, self.model_version_)
                candidates = self.unlabeled_indices
                if not 1 <= n <= len(candidates):
                    raise ValueError(
                        f"n must be between 1 and the {len(candidates)} unlabelled "
                        f"rows, got n={n}"
                    )
                if attempt == 2:  # a busy directory: score while holding it
                    picked = self._picks(candidates, int(n))
                    self._append({"op": "query", "rows": picked.tolist()})
                    return picked.copy()
            picked = self._picks(candidates, int(n))
            with self._locked():
                self._sync()
                if (self._seq, self.model_version_) == seen:
                    self._append({"op": "query", "rows": picked.tolist()})
                    return picked.copy()
        raise AssertionError("unreachable")  # pragma: no cover

    def _picks(self, candidates, n):
        """The rows a new query proposes, among ``candidates``."""
        if self.model_version_ is None:
            return candidates[self._cold_start_picks(candidates, n)]
        return candidates[self.learner_.query(self._rows(candidates), n)]

    def teach(self, indices, labels, *, fit=True, annotator=None):
        """Record the labels of pool rows, durably, then train on them.

        Parameters
        ----------
        indices : array-like of int
            Pool rows without an answer yet.
        labels : array-like
            Their labels.
        fit : bool, default=True
            Train on every recorded answer after recording these. With
            False, the answers are only recorded; :meth:`fit` trains later
            (a labelling tool's backend can train every k answers, or on a
            timer).
        annotator : str or None, default=None
            Who answered, kept in the log.

        Raises
        ------
        ValueError, TypeError
            Before anything is recorded, for indices out of range, repeated
            or already labelled, non-integer indices, or labels of another
            kind than the session's or outside the declared classes.
        OSError
            If the answers could not be written (nothing is recorded then;
            answer again once the directory is writable).
        """
        self._record("label", indices, labels, fit, annotator)

    def relabel(self, indices, labels, *, fit=True, annotator=None):
        """Correct the labels of rows that have an answer.

        The log keeps the earlier answers; the model trains on the latest
        one.

        Parameters
        ----------
        indices : array-like of int
            Pool rows that have an answer.
        labels : array-like
            Their corrected labels.
        fit : bool, default=True
            Train on every recorded answer after recording these.
        annotator : str or None, default=None
            Who corrected them, kept in the log.

        Raises
        ------
        ValueError, TypeError
            Before anything is recorded, as for :meth:`teach`, or for rows
            without an answer.
        OSError
            If the corrections could not be written (nothing is recorded).
        """
        self._record("relabel", indices, labels, fit, annotator)

    def unlabel(self, indices, *, fit=True, annotator=None):
        """Withdraw the answers of rows (they may be queried again).

        The log keeps the withdrawn answers.

        Parameters
        ----------
        indices : array-like of int
            Pool rows that have an answer.
        fit : bool, default=True
            Train on the remaining answers after recording this.
        annotator : str or None, default=None
            Who withdrew them, kept in the log.

        Raises
        ------
        ValueError, TypeError
            Before anything is recorded, for indices that are not integers,
            out of range, repeated or without an answer.
        OSError
            If the withdrawal could not be written (nothing is recorded).
        """
        self._record("unlabel", indices, None, fit, annotator)

    def fit(self):
        """Train on every recorded answer (nothing to do if the model is current).

        Returns
        -------
        self : LabelingSession
        """
        with self._locked():
            self._sync()
            if not self.needs_fit:
                return self
            self._append({"op": "fit"})
        self._train()
        return self

    # ---------------------------------------------------------- recording
    def _record(self, op, indices, labels, fit, annotator):
        method = "teach" if op == "label" else op
        if not isinstance(fit, bool | np.bool_):
            raise TypeError(f"fit must be a bool, got {fit!r}")
        if annotator is not None and not isinstance(annotator, str):
            raise TypeError(
                f"annotator must be a string or None, got {type(annotator).__name__}"
            )
        with self._locked():
            self._sync()
            rows = self._check_indices(indices, op)
            values = None
            if op != "unlabel":
                values = self._check_labels(labels, len(rows), method)
            record = {
                "op": op,
                "rows": rows,
                "labels": values,
                "time": time.time(),
                "annotator": annotator,
                "fit": bool(fit),
            }
            self._append(record)
        if fit:
            self._train()

    def _check_indices(self, indices, op):
        method = "teach" if op == "label" else op
        arr = np.asarray(indices)
        if arr.dtype == object or arr.dtype.kind not in "iu":
            raise TypeError(
                f"{method}: indices must be integers (pool row numbers), got "
                f"{arr.dtype} values such as {arr.reshape(-1)[:3].tolist()}"
            )
        arr = arr.reshape(-1).astype(np.int64)
        if len(arr) == 0:
            raise ValueError(f"{method}: indices is empty")
        if arr.min() < 0 or arr.max() >= self._n_pool:
            bad = arr[(arr < 0) | (arr >= self._n_pool)]
            raise ValueError(
                f"{method}: indices must be in [0, {self._n_pool}), got {bad.tolist()}"
            )
        if len(np.unique(arr)) != len(arr):
            values, counts = np.unique(arr, return_counts=True)
            raise ValueError(
                f"{method}: rows {values[counts > 1].tolist()} are repeated; give each "
                "row once"
            )
        labelled = np.fromiter((i in self._answers for i in arr.tolist()), bool)
        if op == "label" and labelled.any():
            raise ValueError(
                f"teach: rows {arr[labelled].tolist()} already have an answer; "
                "correct them with relabel()"
            )
        if op != "label" and not labelled.all():
            raise ValueError(
                f"{method}: rows {arr[~labelled].tolist()} have no answer; label them "
                "with teach()"
            )
        return arr.tolist()

    def _check_labels(self, labels, n_rows, op):
        values = list(labels.tolist() if hasattr(labels, "tolist") else labels)
        if isinstance(labels, str) or len(values) != n_rows:
            raise ValueError(
                f"{op}: {n_rows} indices but "
                f"{1 if isinstance(labels, str) else len(values)} labels; they "
                "must have the same length"
            )
        values = [v.item() if isinstance(v, np.generic) else v for v in values]
        kinds = {_label_kind(v, op) for v in values}
        kinds |= {_label_kind(v, "labels") for v in self._answers.values()}
        classes = self.learner_.classes
        declared = None if classes is None else np.asarray(classes).tolist()
        if declared is not None:
            kinds |= {_label_kind(c, "classes") for c in declared}
        if len(kinds) > 1:
            raise TypeError(
                f"{op}: labels must all be of one kind, but {sorted(kinds)} are "
                f"mixed (got {values[:5]}, the session has "
                f"{list(self._answers.values())[:5]}, classes={declared}); answer "
                "with the same kind of label"
            )
        if declared is not None:
            undeclared = [v for v in values if v not in declared]
            if undeclared:
                raise ValueError(
                    f"{op}: labels {undeclared[:5]} are not among the learner's "
                    f"classes {declared}; add them to ActiveLearner(classes=...)"
                )
        if classes is None and self.model_version_ is not None:
            # a fitted model has its classes; a new one needs them declared
            fitted = self.learner_.classes_.tolist()
            new = [v for v in values if v not in fitted]
            if new:
                raise ValueError(
                    f"{op}: labels {new[:5]} are not among the classes the model "
                    f"was trained with {fitted}; declare every class up front with "
                    "ActiveLearner(classes=...)"
                )
        return values

    # --------------------------------------------------------------- log
    @contextmanager
    def _locked(self):
        """Hold the directory's lock (re-entrant within this object)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        path = self.directory / _LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            try:  # a read-only directory: reading still works
                fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise _write_error(self.directory, "create its lock file", exc) from exc
        deadline = time.monotonic() + self.lock_timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SessionLockedError(
                            f"the labelling session in {self.directory} is held by "
                            f"another session object or process (waited "
                            f"{self.lock_timeout:g} s); retry, or raise "
                            "lock_timeout"
                        ) from None
                    time.sleep(0.01)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _sync(self, model=True):
        """Read the records appended since the last read (by anyone), and the
        model if another session object or process committed a newer one."""
        path = self.directory / _LOG
        try:
            with open(path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            data = b""
        # an incomplete last line was never acknowledged: ignored here and
        # cut off by the next append
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines(keepends=True):
            record = self._verified(line)
            self._apply(record)
            self._offset += len(line)
        if model:
            self._check_model_changed()

    def _verified(self, line):
        where = f"line {self._seq + 2} of {self.directory / _LOG}"
        try:
            record = json.loads(line)
            digest = record.pop("hash")
        except (ValueError, UnicodeDecodeError, AttributeError, KeyError):
            raise _damaged(where, "is not a complete record") from None
        if (
            record.get("seq") != self._seq + 1
            or record.get("prev") != self._hash
            or digest != _record_hash(record)
        ):
            raise _damaged(
                where,
                "does not continue the records before it (edited, reordered or "
                "corrupted)",
            )
        if record.get("op") not in _OPS:
            raise _damaged(where, f"has an unknown operation {record.get('op')!r}")
        return {**record, "hash": digest}

    def _append(self, record):
        """Commit one record: a single write of its line, then fsync."""
        record = {"seq": self._seq + 1, **record, "prev": self._hash}
        digest = _record_hash(record)
        line = (json.dumps({**record, "hash": digest}) + "\n").encode()
        path = self.directory / _LOG
        new = not path.exists()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _write_error(self.directory, "record the answers", exc) from exc
        try:
            # a torn line of a killed or failed writer: cut it off first
            if os.fstat(fd).st_size != self._offset:
                os.ftruncate(fd, self._offset)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, self._offset)
            except OSError:
                pass  # the torn line is cut off by the next append
            raise _write_error(self.directory, "record the answers", exc) from exc
        finally:
            os.close(fd)
        if new:
            fsync_directory(self.directory)
        self._apply({**record, "hash": digest})
        self._offset += len(line)

    def _apply(self, record):
        op = record["op"]
        self._seq, self._hash = record["seq"], record["hash"]
        if op == "open":
            self._header = record
        elif op == "query":
            self._open = list(record["rows"])
            self._n_queries += 1
        elif op == "fit":
            self._fit_seq = record["seq"]
        else:
            labels = record["labels"] or [None] * len(record["rows"])
            for row, label in zip(record["rows"], labels, strict=True):
                if op == "unlabel":
                    self._answers.pop(row)
                else:
                    self._answers[row] = label
                self._history.append(
                    {
                        "op": op,
                        "index": row,
                        "label": label,
                        "time": record["time"],
                        "annotator": record["annotator"],
                    }
                )
            answered = set(record["rows"])
            self._open = [r for r in self._open if r not in answered]
            if record["fit"]:
                self._fit_seq = record["seq"]

    def _create(self):
        self._append(
            {
                "op": "open",
                "format": _FORMAT,
                "n_pool": self._n_pool,
                "fingerprint": self._pool_fingerprint,
            }
        )
        self._migrate()

    def _migrate(self):
        """Carry the answers of a session saved by skal 0.x (``labels.json``
        and ``pending.json``) into the log; the model is trained again."""
        old = self.directory / "labels.json"
        if not old.exists():
            return
        labels = json.loads(old.read_text())
        if labels.get("n_pool") != self._n_pool:
            raise ValueError(
                f"the session in {self.directory} was made for a pool of "
                f"{labels.get('n_pool')} rows; this pool has {self._n_pool}"
            )
        rows = labels["rows"]
        if rows:
            self._append(
                {
                    "op": "label",
                    "rows": [int(r[0]) for r in rows],
                    "labels": [r[1] for r in rows],
                    "time": old.stat().st_mtime,
                    "annotator": None,
                    "fit": True,
                }
            )
        pending = self.directory / "pending.json"
        if pending.exists():
            open_rows = json.loads(pending.read_text())["rows"]
            if open_rows:
                self._append({"op": "query", "rows": open_rows})

    def _check_header(self):
        header = self._header
        if header.get("format") != _FORMAT:
            raise _damaged(
                f"the session in {self.directory}",
                f"has format {header.get('format')!r}; this version of skal reads "
                f"format {_FORMAT}",
            )
        if header["n_pool"] != self._n_pool:
            raise ValueError(
                f"the session in {self.directory} was made for a pool of "
                f"{header['n_pool']} rows; this pool has {self._n_pool}"
            )
        if header["fingerprint"] != self._pool_fingerprint:
            raise ValueError(
                f"the session in {self.directory} was made for another pool of "
                f"{self._n_pool} rows: a sample of its rows differs from this "
                "pool's. Its answers would attach to other items; open it with "
                "the same pool, in the same order"
            )

    # ------------------------------------------------------------- model
    def _target(self):
        """The answers to train on: rows and labels, in first-labelled order."""
        return tuple(self._answers), tuple(self._answers.values())

    def _train(self, catch=False):
        """Train on the current answers, then commit the model."""
        with self._locked():
            self._sync()
            seq, (rows, labels) = self._seq, self._target()
        if (rows, labels) == self._trained or not rows:
            return
        if self.learner_.classes is None and len(set(labels)) < 2:
            warnings.warn(
                f"the session in {self.directory} has answers of "
                f"{len(set(labels))} class; training waits for a second class "
                "(or declare every class with ActiveLearner(classes=...))",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        trained_rows, trained_labels = self._trained
        n = len(trained_rows)
        try:
            learner = self.learner_
            n_initial = self._n_initial
            if n and rows[:n] == trained_rows and labels[:n] == trained_labels:
                learner.teach(self._rows(rows[n:]), np.asarray(labels[n:]))
            elif n and len(rows) > 1:
                # answers corrected: the model as it stands, given every
                # answer but the last, is taught the last; it trains on the
                # corrected answers from its current weights
                learner, n_initial = self._corrected(learner, rows, labels)
            else:  # the first training
                learner = clone(self.learner).fit(self._rows(rows), np.asarray(labels))
                n_initial = len(rows)
            with self._locked():
                self._sync(model=False)  # the others' records, then their model
                state = self._read_state()
                if state is not None and state["seq"] > seq:
                    # another process trained on more answers meanwhile
                    self._load_model(state)
                    return
                self._save_model(learner, seq, (rows, labels), n_initial)
        except Exception as exc:
            # the model in memory is the one on disk, whatever failed
            self._reset_model()
            if not catch:
                exc.add_note(
                    f"The answers are recorded in {self.directory}; the model "
                    "stays as last saved, and fit() trains on them again."
                )
                raise
            warnings.warn(
                f"the session in {self.directory} could not train on its answers "
                f"({type(exc).__name__}: {exc}); they are kept, and the model "
                "stays as last trained",
                RuntimeWarning,
                stacklevel=3,
            )

    def _corrected(self, learner, rows, labels):
        """The fitted learner restored on corrected answers (all but the
        last), then taught the last one."""
        net = final_step(learner.estimator_)
        n_initial = min(self._n_initial, len(rows) - 1)
        restored = clone(self.learner).restore(
            self._rows(rows[:-1]),
            np.asarray(labels[:-1]),
            weights=state_dicts(net) if isinstance(net, NeuralNet) else None,
            n_initial=n_initial,
            random_state=learner.random_state_.get_state(),
            strategy_state=strategy_state(learner.strategy_),
            n_rounds=learner.n_rounds_,
        )
        restored.teach(self._rows(rows[-1:]), np.asarray(labels[-1:]))
        return restored, n_initial

    def _reset_model(self):
        """Put the learner back as last committed (or unfitted)."""
        with self._locked():
            self._sync(model=False)
            state = self._read_state()
            if state is not None:
                self._model_seq = -1  # load even at the same position
                self._load_model(state)
                return
            self.learner_ = clone(self.learner)
            self._trained, self._n_initial = ((), ()), 0
            self._model_seq, self.model_version_ = -1, None

    def _rows(self, indices):
        """Pool rows for the learner: a lazy view of an array pool for a network
        (:func:`skal._data.array_pool`), as the simulations read theirs."""
        return take(array_pool(self.pool, self.learner.estimator), indices)

    def _cold_start_picks(self, candidates, n):
        """Label-free picks among ``candidates``: each query's draw is seeded
        by the learner's ``random_state`` and the number of queries so far."""
        seed = check_random_state(self.learner.random_state).randint(2**31 - 1)
        embedding = self.cold_start_embedding
        if hasattr(embedding, "__len__") and not callable(embedding):
            embedding = np.asarray(embedding)
            if len(embedding) != self._n_pool:
                raise ValueError(
                    f"cold_start_embedding has {len(embedding)} rows; the pool has "
                    f"{self._n_pool}"
                )
            embedding = embedding[candidates]
        return select_label_free(
            self.learner,
            self._rows(candidates),
            n,
            method=self.cold_start,
            random_state=np.random.RandomState([seed, self._n_queries]),
            embedding=embedding,
        )

    def should_stop(self, criteria, *, require="any"):
        """Whether to stop labelling, by stopping criteria, and why.

        Each criterion is shown the model as last trained and the rows still
        unlabelled (see :func:`skal.stopping.should_stop`); asking again
        before the model changes (``model_version_``) changes nothing. The
        criteria's state is kept in the session's directory too, under their
        position in ``criteria``, class and parameters: criteria configured
        alike continue their windows in a reopened session or another
        process (a stop set is stored as the pool rows it was drawn from).

        Parameters
        ----------
        criteria : StoppingCriterion or list of StoppingCriterion
            From :mod:`skal.stopping`; updated in place.
        require : {"any", "all"}, default="any"
            Stop when any criterion says so, or only when all do.

        Returns
        -------
        stop : bool
        reason : str
        """
        with self._locked():
            self._sync()
        if self.model_version_ is None:
            return False, "no model has been trained yet"
        listed = list(criteria) if isinstance(criteria, list | tuple) else [criteria]
        store = self._criteria
        store.restore(listed, self._rows)
        fresh = {id(c) for c in listed if not getattr(c, "n_updates_", 0)}
        unlabeled = self.unlabeled_indices
        decision = should_stop(
            criteria if isinstance(criteria, list | tuple) else listed[0],
            self.learner_,
            self._rows(unlabeled),
            version=self.model_version_,
            require=require,
        )
        try:
            with self._locked():
                store.save(listed, unlabeled, fresh)
        except OSError as exc:
            warnings.warn(
                f"the stopping criteria's state could not be saved in "
                f"{self.directory} ({exc}); a reopened session starts their "
                "windows again",
                RuntimeWarning,
                stacklevel=2,
            )
        return decision

    def _model_dir(self):
        return self.directory / _MODEL

    def _read_state(self):
        path = self._model_dir() / _STATE
        if not path.exists():
            return None
        where = str(path)
        try:
            state = json.loads(path.read_bytes())
            checksum = state.pop("checksum")
        except (ValueError, UnicodeDecodeError, AttributeError, KeyError):
            raise _damaged(where, "is not a complete model index") from None
        if checksum != json_digest(state):
            raise _damaged(where, "was modified after it was written")
        if state.get("format") != _FORMAT or state.get("seq", 1e18) > self._seq:
            raise _damaged(
                where, "belongs to another session (or a later log than this one)"
            )
        return state

    def _load_model(self, state):
        """Rebuild the learner from the committed model, without training."""
        where = f"the model of the session in {self.directory}"
        arrays_path = self._model_dir() / state["arrays"]
        if file_digest(arrays_path) != state["files"][state["arrays"]]:
            raise _damaged(where, f"{state['arrays']} does not match its checksum")
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        rows, labels = list(state["rows"]), list(state["labels"])
        weights = None
        if state["weights"] is not None:
            weights = load_weights(
                self._model_dir() / state["weights"],
                state["files"][state["weights"]],
                where,
            )
        learner = clone(self.learner)
        try:
            learner.restore(
                self._rows(rows),
                np.asarray(labels),
                weights=weights,
                n_initial=state["n_initial"],
                n_rounds=state["n_rounds"],
                **restore_arguments(state, arrays),
            )
        except (RuntimeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise _damaged(
                where,
                "does not fit the learner it was opened with "
                f"({' '.join(str(exc).split())[:300]})",
            ) from None
        self.learner_ = learner
        self._trained = (tuple(rows), tuple(labels))
        self._n_initial = state["n_initial"]
        self._model_seq = state["seq"]
        self.model_version_ = state["version"]

    def _check_model_changed(self):
        """Another session object or process committed a newer model."""
        path = self._model_dir() / _STATE
        if not path.exists():
            return
        state = self._read_state()
        if state["seq"] > self._model_seq:
            self._load_model(state)

    def _save_model(self, learner, seq, trained, n_initial):
        """Commit ``learner`` as the model trained through log record ``seq``
        on ``trained`` (rows, labels); only then is it the session's."""
        directory = self._model_dir()
        directory.mkdir(exist_ok=True)
        saved, arrays = learner_state(learner)
        rows, labels = trained
        files = {}
        net = final_step(learner.estimator_)
        weights_name = None
        if isinstance(net, NeuralNet):
            states = state_dicts(net)
            tmp_name = f"weights-{seq}.pt"
            digest = write_file(directory / tmp_name, lambda fh: torch.save(states, fh))
            version = digest[:12]
            weights_name = f"weights-{version}.pt"
            os.replace(directory / tmp_name, directory / weights_name)
            files[weights_name] = digest
        else:
            version = json_digest([list(rows), list(labels)])[:12]
        arrays_name = f"arrays-{version}-{seq}.npz"
        files[arrays_name] = write_file(
            directory / arrays_name, lambda fh: np.savez(fh, **arrays)
        )
        state = {
            "format": _FORMAT,
            "seq": int(seq),
            "version": version,
            "rows": [int(r) for r in rows],
            "labels": list(labels),
            "n_initial": int(n_initial),
            "n_rounds": int(learner.n_rounds_),
            "weights": weights_name,
            "arrays": arrays_name,
            "files": files,
            **saved,
        }
        state["checksum"] = json_digest(state)
        payload = json.dumps(state, indent=1).encode()
        write_file(directory / _STATE, lambda fh: fh.write(payload))
        self.learner_, self._trained, self._n_initial = learner, trained, n_initial
        self._model_seq, self.model_version_ = seq, version
        for path in directory.iterdir():
            if path.name not in files and path.name != _STATE:
                if not path.name.startswith("."):
                    path.unlink(missing_ok=True)


def _label_kind(value, op):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return "str"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return "int"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not np.isfinite(value):
            raise ValueError(f"{op}: labels must be finite, got {value!r}")
        return "float"
    raise TypeError(
        f"{op}: labels must be integers, strings or floats, got {value!r} of type "
        f"{type(value).__name__}"
    )


def _record_hash(record):
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]


def _damaged(where, reason):
    return CheckpointError(
        f"{where} {reason}. The session's answers are in log.jsonl; restore the "
        "damaged file from a backup (a damaged model/ directory can be deleted: "
        "the session then trains again on the answers)"
    )


def _write_error(directory, what, exc):
    reason = {
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOSPC: "the disk is full",
        errno.EFBIG: "the file size limit is reached",
        errno.EDQUOT: "the disk quota is exceeded",
    }.get(exc.errno, exc.strerror or str(exc))
    return OSError(
        exc.errno,
        f"could not {what} in {directory} ({reason}); nothing was recorded: "
        "answer again once the directory is writable",
    )


def _fingerprint(pool):
    """A digest of the pool's size, kind and a sample of its rows.

    Cheap at any size: 32 evenly spaced rows (ends included) are read, or,
    for an image folder, the list of its files. A reordered or replaced pool
    changes it with near certainty; a change confined to rows outside the
    sample does not.
    """
    n = n_samples(pool)
    h = hashlib.sha256(f"{n}".encode())
    positions = np.unique(np.linspace(0, n - 1, min(n, _FINGERPRINT_ROWS)).astype(int))
    if is_torch_dataset(pool):
        samples = getattr(pool, "samples", None)
        if isinstance(samples, list) and len(samples) == n:
            # an ImageFolder: its files, in order
            names = [os.fspath(s[0]) if isinstance(s, tuple) else s for s in samples]
            h.update(json.dumps([str(v) for v in names]).encode())
            return h.hexdigest()[:32]
        for i in positions.tolist():
            first = _item_bytes(split_item(pool[i])[0])
            # a random transform gives other bytes at each read: left out
            if first is not None and first == _item_bytes(split_item(pool[i])[0]):
                h.update(first)
        return h.hexdigest()[:32]
    if hasattr(pool, "iloc"):
        h.update(repr(list(pool.columns)).encode())
        h.update(repr(pool.iloc[positions].to_numpy().tolist()).encode())
        return h.hexdigest()[:32]
    if isinstance(pool, list):
        h.update(repr([pool[i] for i in positions]).encode())
        return h.hexdigest()[:32]
    rows = np.ascontiguousarray(to_array(pool[positions]))
    h.update(str((rows.dtype.str, tuple(np.shape(pool)))).encode())
    if rows.dtype == object:
        h.update(repr(rows.tolist()).encode())
    else:
        h.update(rows.data)
    return h.hexdigest()[:32]


def _item_bytes(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if hasattr(x, "getbands"):  # PIL
        x = np.asarray(x)
    if isinstance(x, dict):
        return b"".join(
            k.encode() + (_item_bytes(v) or b"") for k, v in sorted(x.items())
        )
    x = np.asarray(x)
    if x.dtype == object:
        return repr(x.tolist()).encode()
    return str((x.dtype.str, x.shape)).encode() + np.ascontiguousarray(x).tobytes()
