"""Live labelling sessions: a person labels what the learner queries, over days."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet

from ._data import n_samples, take
from ._persistence import load_state_dicts, write_file
from ._utils import final_step
from .model_selection._checkpoint import RunCheckpoint
from .model_selection._simulation import _net_of

_LABELS = "labels.json"
_PENDING = "pending.json"
_MODEL = "model"
_FORMAT = 1


class LabelingSession:
    """Active learning with a person as the oracle, saved to a directory.

    The session owns a fixed pool and the indices of its rows that have been
    labelled. :meth:`query` proposes rows that were never taught; :meth:`teach`
    records the person's answers and trains on them. Everything is kept in
    ``directory`` so that the session can stop at any moment (a closed
    laptop, a crash) and resume where it stood, by creating the session again
    with the same arguments:

    - answers are written to ``labels.json`` durably (a temporary file,
      ``fsync``, then an atomic rename) *before* any training on them, so a
      crash during training loses no label; the model catches up on them
      when the session is reopened;
    - an open query is journaled in ``pending.json`` before it is returned;
      until its rows are answered, :meth:`query` returns the same rows again,
      so a crash between query and answer neither loses nor changes them;
    - after each training, the model's weights (``torch.save`` of the
      modules' ``state_dict``), the learner's random state and the strategy's
      state are committed as in the simulation checkpoints of
      :mod:`skal.model_selection`. Nothing is unpickled on resume: JSON,
      ``numpy.load(allow_pickle=False)`` and ``torch.load(weights_only=True)``.

    Labels must be JSON values (integers, strings, floats).

    Parameters
    ----------
    learner : ActiveLearner
        The unfitted learner; cloned. Declare ``classes`` when the first
        labelled rows may not show every class.
    pool : array-like of shape (n_pool, ...) or torch Dataset
        Every row that may be labelled; indices refer to it. It must be the
        same pool, in the same order, each time the session is opened.
    directory : path-like
        Where the session lives (created if needed).

    Attributes
    ----------
    learner_ : ActiveLearner
        The learner, fitted once the first labels are taught.
    labeled_indices_ : ndarray of int
        Pool rows labelled so far, in the order they were taught.
    labels_ : ndarray
        Their labels.
    pending_ : ndarray of int
        Rows of the open query not answered yet (empty when none).

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
    >>> session.teach(range(20), y[:20])   # a first labelled set
    >>> rows = session.query(5)             # shown to the person
    >>> session = skal.LabelingSession(learner, X, directory)  # reopened
    >>> bool((session.query(5) == rows).all())  # the open query, unchanged
    True
    >>> session.teach(rows, y[rows])
    >>> len(session.labeled_indices_)
    25
    """

    def __init__(self, learner, pool, directory):
        self.directory = Path(directory)
        self.pool = pool
        self.learner_ = clone(learner)
        self._checkpoint = RunCheckpoint(self.directory / _MODEL)
        self.directory.mkdir(parents=True, exist_ok=True)
        labels = _read_json(self.directory / _LABELS)
        if labels is None:
            labels = {"format": _FORMAT, "n_pool": n_samples(pool), "rows": []}
        if labels.get("n_pool") != n_samples(pool):
            raise ValueError(
                f"the session in {self.directory} was made for a pool of "
                f"{labels.get('n_pool')} rows; this pool has {n_samples(pool)}"
            )
        rows = labels["rows"]
        self.labeled_indices_ = np.asarray([r[0] for r in rows], dtype=np.int64)
        self.labels_ = np.asarray([r[1] for r in rows])
        self._n_first = labels.get("n_first")
        pending = _read_json(self.directory / _PENDING) or {"rows": []}
        self.pending_ = np.asarray(pending["rows"], dtype=np.int64)
        self._restore()

    # ------------------------------------------------------------- public
    @property
    def unlabeled_indices(self) -> np.ndarray:
        """Pool rows never labelled, in pool order."""
        mask = np.ones(n_samples(self.pool), dtype=bool)
        mask[self.labeled_indices_] = False
        return np.flatnonzero(mask)

    def query(self, n=1):
        """Rows to label next: the open query's unanswered rows, or new ones.

        Parameters
        ----------
        n : int, default=1
            How many rows a new query proposes (an open query is returned
            as it is).

        Returns
        -------
        indices : ndarray of int
            Pool row indices, never ones already labelled.
        """
        if len(self.pending_):
            return self.pending_.copy()
        check_is_fitted(
            self.learner_,
            msg="teach a first labelled set before the session can query",
        )
        candidates = self.unlabeled_indices
        picked = candidates[self.learner_.query(take(self.pool, candidates), n)]
        self._write_pending(picked)
        return picked.copy()

    def teach(self, indices, labels):
        """Record the labels of pool rows, durably, then train on them.

        Parameters
        ----------
        indices : array-like of int
            Pool rows, none labelled before.
        labels : array-like
            Their labels (JSON values).
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        labels = np.asarray(labels).reshape(-1)
        if len(indices) != len(labels):
            raise ValueError(
                f"teach: {len(indices)} indices but {len(labels)} labels; they "
                "must have the same length"
            )
        n_pool = n_samples(self.pool)
        if len(indices) == 0:
            raise ValueError("teach: indices is empty")
        if indices.min() < 0 or indices.max() >= n_pool:
            raise ValueError(f"teach: indices must be in [0, {n_pool}), got {indices}")
        again = np.intersect1d(indices, self.labeled_indices_)
        if len(again) or len(np.unique(indices)) != len(indices):
            raise ValueError(
                f"teach: rows {again.tolist() or indices.tolist()} are already "
                "labelled or repeated; each row is labelled once"
            )
        self.labeled_indices_ = np.concatenate([self.labeled_indices_, indices])
        self.labels_ = (
            labels if len(self.labels_) == 0 else np.concatenate([self.labels_, labels])
        )
        if self._n_first is None:
            self._n_first = len(indices)
        self._write_labels()  # the commit point of the answers
        self._write_pending(np.setdiff1d(self.pending_, indices))
        self._train(len(self.labeled_indices_) - len(indices))

    # ------------------------------------------------------------ private
    def _train(self, n_trained):
        """Train on the labelled rows past the first ``n_trained``, then commit
        the model."""
        rows, labels = self.labeled_indices_, self.labels_
        if n_trained == 0:
            self.learner_.fit(take(self.pool, rows), labels)
        else:
            self.learner_.teach(take(self.pool, rows[n_trained:]), labels[n_trained:])
        self._checkpoint.save(
            len(rows), rows, [], self.learner_, net=_net_of(self.learner_)
        )

    def _restore(self):
        """Rebuild the learner from the committed model, then train on labels
        committed after it (a crash during training)."""
        state = self._checkpoint.load()
        n_trained = 0 if state is None else state["n_labeled"]
        rows, labels = self.labeled_indices_, self.labels_
        if state is not None:
            net = _net_of_template(self.learner_)
            if net is None:
                self.learner_.fit(take(self.pool, rows[:n_trained]), labels[:n_trained])
            else:
                first = self._n_first if self.learner_.warm_start else n_trained
                _fit_without_training(
                    self.learner_, take(self.pool, rows[:first]), labels[:first]
                )
                load_state_dicts(
                    _net_of(self.learner_), self._checkpoint.weights(state["weights"])
                )
                self.learner_.X_labeled_ = take(self.pool, rows[:n_trained])
                self.learner_.y_labeled_ = labels[:n_trained]
                self.learner_.n_labeled_ = n_trained
            RunCheckpoint.restore_random_state(self.learner_, state)
        if len(rows) > n_trained:
            self._train(n_trained)

    def _write_labels(self):
        rows = [
            [int(i), _json_value(v)]
            for i, v in zip(self.labeled_indices_, self.labels_, strict=True)
        ]
        payload = {
            "format": _FORMAT,
            "n_pool": n_samples(self.pool),
            "n_first": self._n_first,
            "rows": rows,
        }
        _write_json(self.directory / _LABELS, payload)

    def _write_pending(self, rows):
        self.pending_ = np.asarray(rows, dtype=np.int64)
        _write_json(self.directory / _PENDING, {"rows": self.pending_.tolist()})


def _net_of_template(learner):
    final = final_step(learner.estimator)
    return final if isinstance(final, NeuralNet) else None


def _fit_without_training(learner, X, y):
    """Fit the learner with zero epochs: modules built, nothing trained."""
    param = "estimator__max_epochs"
    if isinstance(learner.estimator, Pipeline):
        param = f"estimator__{learner.estimator.steps[-1][0]}__max_epochs"
    epochs = learner.get_params()[param]
    learner.set_params(**{param: 0}).fit(X, y)
    learner.set_params(**{param: epochs})
    _net_of(learner).set_params(max_epochs=epochs)


def _json_value(v):
    return v.item() if hasattr(v, "item") else v


def _read_json(path):
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _write_json(path, payload):
    data = json.dumps(payload).encode()
    write_file(path, lambda fh: fh.write(data))
