"""When to stop asking for labels: stopping criteria for the active-learning loop.

A criterion is a small sklearn-style object: ``__init__`` stores its
parameters, :meth:`StoppingCriterion.update` shows it the model of the
current round (a fitted :class:`~skal.ActiveLearner`) and the rows still
unlabelled, and :meth:`StoppingCriterion.should_stop` then says whether to
stop, with ``reason_`` saying why (or why not). Criteria that compare
successive models keep what they need of the previous one (its predictions on
a fixed *stop set*), so each one is updated once per model: an update with
the ``version`` of the previous one (by default the learner's labelled count)
changes nothing.

- :class:`StabilizingPredictions` — Cohen's kappa between successive models'
  predictions on a stop set, averaged over a window (Bloodgood &
  Vijay-Shanker, 2009);
- :class:`OverallUncertainty` — the mean uncertainty of the unlabelled rows
  (Zhu, Wang & Hovy, 2008);
- :class:`MaxConfidence` — the uncertainty of the most uncertain unlabelled
  row (Zhu & Hovy, 2007; Zhu, Wang, Hovy & Ma, 2010);
- :class:`ClassificationChange` — the share of predictions that changed
  since the previous model (Zhu, Wang & Hovy, 2008);
- :class:`DeltaF` — the predicted change of F-measure between successive
  models (Altschuler & Bloodgood, 2019);
- :class:`Budget` — a number of labels or of rounds.

:func:`should_stop` updates several criteria with one prediction pass and
returns ``(stop, reason)``; :func:`skal.model_selection.evaluate_stopping`
records where each criterion would stop along simulated learning curves.
"""

from __future__ import annotations

import numbers
from abc import ABCMeta, abstractmethod
from functools import cached_property

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._data import n_samples, take
from .validation import Interval, Options, check_params, validate_arguments

__all__ = [
    "Budget",
    "ClassificationChange",
    "DeltaF",
    "MaxConfidence",
    "OverallUncertainty",
    "StabilizingPredictions",
    "StoppingCriterion",
    "cohen_kappa",
    "delta_f",
    "should_stop",
]

_UNCERTAINTY = ("entropy", "least_confidence", "margin")


class _Round:
    """What criteria see of one round: the learner, the unlabelled rows, and
    predictions computed once however many criteria ask for them."""

    def __init__(self, learner, X_unlabeled):
        check_is_fitted(learner)
        self.learner = learner
        self.X_unlabeled = X_unlabeled
        self.n_unlabeled = 0 if X_unlabeled is None else n_samples(X_unlabeled)
        self._stop_sets = {}

    @cached_property
    def proba_unlabeled(self) -> np.ndarray:
        return np.asarray(self.learner.predict_proba(self.X_unlabeled))

    def labels_on(self, X_stop) -> np.ndarray:
        """Predicted class indices (into ``classes_``) on a stop set."""
        key = id(X_stop)
        if key not in self._stop_sets:
            proba = np.asarray(self.learner.predict_proba(X_stop))
            self._stop_sets[key] = proba.argmax(axis=1)
        return self._stop_sets[key]


class StoppingCriterion(BaseEstimator, metaclass=ABCMeta):
    """Base class of skal's stopping criteria.

    A subclass declares its parameters in ``_parameter_constraints`` (as
    sklearn estimators do; they are checked at the first :meth:`update`)
    and implements ``_observe(round)``, which returns ``(stop, value,
    reason)`` for the round's model.

    Attributes
    ----------
    stop_ : bool
        Whether the criterion says to stop after the latest update.
    reason_ : str
        Why it stops, or why not yet, with the numbers it compared.
    value_ : float
        The criterion's statistic at the latest update (NaN while it has
        too few models to compute it).
    history_ : list of float
        ``value_`` at every update.
    n_updates_ : int
        How many models the criterion has seen.
    version_ : object
        The ``version`` of the latest update.

    Examples
    --------
    A criterion that stops once the labelled set reaches 50 rows:

    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> from skal.stopping import StoppingCriterion
    >>> class Fifty(StoppingCriterion):
    ...     def _observe(self, round_):
    ...         n = round_.learner.n_labeled_
    ...         return n >= 50, float(n), f"{n} labels"
    >>> X, y = load_digits(return_X_y=True)
    >>> learner = skal.ActiveLearner(LogisticRegression(max_iter=200))
    >>> learner = learner.fit(X[:60], y[:60])
    >>> Fifty().update(learner, X[60:]).should_stop()
    True
    """

    _parameter_constraints: dict = {}

    def update(self, learner, X_unlabeled, *, version=None):
        """Show the criterion the model of a new round.

        Parameters
        ----------
        learner : ActiveLearner
            Fitted on the labelled set of the round.
        X_unlabeled : array-like of shape (n_unlabeled, ...), tensor or Dataset
            The rows not labelled yet (for the criteria with a stop set, the
            stop set is drawn from the rows given at the first update).
        version : hashable or None, default=None
            Identifies the model: an update with the same version as the
            previous one changes nothing (calling twice without training
            is harmless). None uses the learner's ``n_labeled_``; pass your
            own (e.g. a session's ``model_version_``) when the weights can
            change without the labelled count changing.

        Returns
        -------
        self : StoppingCriterion
        """
        return self._update(_Round(learner, X_unlabeled), version)

    def should_stop(self) -> bool:
        """Whether to stop, after the latest :meth:`update`.

        Returns
        -------
        stop : bool
        """
        if not hasattr(self, "stop_"):
            raise NotFittedError(
                f"{type(self).__name__} has not seen a model yet; call "
                "update(learner, X_unlabeled) first"
            )
        return bool(self.stop_)

    def _update(self, round_, version):
        if version is None:
            version = round_.learner.n_labeled_
        if getattr(self, "n_updates_", 0) and _same(version, self.version_):
            return self
        if not getattr(self, "n_updates_", 0):
            check_params(self)
            self._check_params()
            self.history_ = []
            self.n_updates_ = 0
        if round_.n_unlabeled == 0 and self._needs_pool:
            stop, value = True, float("nan")
            reason = "no unlabelled rows are left"
        else:
            stop, value, reason = self._observe(round_)
        self.stop_ = bool(stop)
        self.value_ = float(value)
        self.reason_ = f"{type(self).__name__}: {reason}"
        self.history_.append(self.value_)
        self.n_updates_ += 1
        self.version_ = version
        return self

    # whether an empty pool means stop (no rows to judge the model on)
    _needs_pool = True

    def _check_params(self):
        """Checks beyond the declared constraints (several parameters)."""

    @abstractmethod
    def _observe(self, round_):
        """``(stop, value, reason)`` for the round's model (every criterion
        implements it)."""


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b


class _StopSetCriterion(StoppingCriterion):
    """A criterion that compares successive models on a fixed stop set."""

    def _stop_set(self, round_):
        if not hasattr(self, "X_stop_"):
            n = round_.n_unlabeled
            size = self.stop_set_size
            rng = check_random_state(self.random_state)
            if size is None or size >= n:
                rows = np.arange(n)
            else:
                rows = np.sort(rng.choice(n, size, replace=False))
            # the rows' positions too: a session stores its stop set as rows
            self.stop_set_rows_ = rows
            self.X_stop_ = take(round_.X_unlabeled, rows)
        return self.X_stop_

    def _observe(self, round_):
        labels = round_.labels_on(self._stop_set(round_))
        previous = getattr(self, "stop_set_predictions_", None)
        self.stop_set_predictions_ = labels
        if previous is None:
            return False, float("nan"), "first model: nothing to compare with yet"
        return self._compare(previous, labels, round_.learner)

    @abstractmethod
    def _compare(self, previous, current, learner):
        """``(stop, value, reason)`` from two successive models' labels on
        the stop set (every stop-set criterion implements it)."""


_STOP_SET_PARAMS = {
    "stop_set_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
    "random_state": ["random_state"],
}


def cohen_kappa(a, b, n_classes: int) -> float:
    """Cohen's kappa between two labelings, 1.0 where both are one class.

    Parameters
    ----------
    a, b : array-like of int of shape (n_samples,)
        Class indices in ``0 .. n_classes - 1``.
    n_classes : int

    Returns
    -------
    kappa : float
        ``(p_o - p_e) / (1 - p_e)``; where chance agreement ``p_e`` is 1
        (both label every row with the same class) the labelings agree
        perfectly and kappa is 1.

    Examples
    --------
    >>> from skal.stopping import cohen_kappa
    >>> round(cohen_kappa([0, 1, 1, 2], [0, 1, 2, 2], 3), 4)
    0.6364
    """
    a, b = np.asarray(a), np.asarray(b)
    p_o = float(np.mean(a == b))
    p_e = float(
        np.dot(
            np.bincount(a, minlength=n_classes) / len(a),
            np.bincount(b, minlength=n_classes) / len(b),
        )
    )
    if p_e >= 1.0:
        return 1.0
    return (p_o - p_e) / (1.0 - p_e)


class StabilizingPredictions(_StopSetCriterion):
    """Stop when successive models agree on a stop set (stabilizing predictions).

    Bloodgood & Vijay-Shanker's method: a *stop set* of unlabelled rows is
    drawn once; after each round the model's predictions on it are compared
    with the previous model's by Cohen's kappa, and the loop stops when the
    mean of the last ``window_size`` kappas reaches ``threshold``. The stop
    set needs no labels, so it can be large; here it is drawn from the rows
    given at the first :meth:`update`.

    Parameters
    ----------
    threshold : float, default=0.99
        The mean kappa at which to stop (the paper's 0.99; lower stops
        earlier).
    window_size : int, default=3
        How many successive kappas are averaged (the paper's 3); the first
        stop is possible after ``window_size + 1`` models.
    stop_set_size : int or None, default=2000
        Rows of the stop set, drawn uniformly; None uses every row given at
        the first update.
    random_state : int, RandomState instance or None, default=None
        Draws the stop set.

    Attributes
    ----------
    X_stop_ : array-like
        The stop set.
    stop_set_predictions_ : ndarray of int
        The latest model's predicted class indices on it.
    value_ : float
        The mean kappa over the window (NaN while the window is not full).

    References
    ----------
    .. [1] M. Bloodgood and K. Vijay-Shanker, "A Method for Stopping Active
       Learning Based on Stabilizing Predictions and the Need for
       User-Adjustable Stopping", CoNLL 2009.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.naive_bayes import GaussianNB
    >>> import skal
    >>> from skal.stopping import StabilizingPredictions
    >>> X, y = load_digits(return_X_y=True)
    >>> learner = skal.ActiveLearner(GaussianNB(), "margin")
    >>> learner = learner.fit(X[:40], y[:40])
    >>> criterion = StabilizingPredictions(window_size=2, random_state=0)
    >>> for _ in range(4):
    ...     stop = criterion.update(learner, X[40:]).should_stop()
    ...     idx = learner.query(X[40:], n=40)
    ...     learner = learner.teach(X[40:][idx], y[40:][idx])
    >>> criterion.n_updates_, len(criterion.history_)
    (4, 4)
    """

    _parameter_constraints = {
        "threshold": [Interval(numbers.Real, -1.0, 1.0, closed="both")],
        "window_size": [Interval(numbers.Integral, 1, None, closed="left")],
        **_STOP_SET_PARAMS,
    }

    def __init__(
        self, threshold=0.99, window_size=3, stop_set_size=2000, random_state=None
    ):
        self.threshold = threshold
        self.window_size = window_size
        self.stop_set_size = stop_set_size
        self.random_state = random_state

    _needs_pool = False

    def _compare(self, previous, current, learner):
        kappas = getattr(self, "kappas_", [])
        kappas.append(cohen_kappa(previous, current, len(learner.classes_)))
        self.kappas_ = kappas
        if len(kappas) < self.window_size:
            return (
                False,
                float("nan"),
                f"{len(kappas)} of the {self.window_size} kappas to average",
            )
        mean = float(np.mean(kappas[-self.window_size :]))
        stop = mean >= self.threshold
        rel = ">=" if stop else "<"
        return (
            stop,
            mean,
            f"mean kappa of the last {self.window_size} models on the stop set "
            f"{mean:.4f} {rel} {self.threshold}",
        )


def _uncertainty(proba, measure):
    """Per-row uncertainty in [0, 1]: normalized entropy, 1 - max probability
    (scaled by C / (C - 1)), or 1 - margin between the top two."""
    n_classes = proba.shape[1]
    if n_classes < 2:
        return np.zeros(len(proba))
    if measure == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(proba > 0, proba * np.log(proba), 0.0)
        return -terms.sum(axis=1) / np.log(n_classes)
    if measure == "least_confidence":
        return (1.0 - proba.max(axis=1)) * n_classes / (n_classes - 1)
    top2 = -np.partition(-proba, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


_UNCERTAINTY_PARAMS = {
    "threshold": [Interval(numbers.Real, 0.0, 1.0, closed="both")],
    "measure": [Options(set(_UNCERTAINTY))],
}
_MEASURE_DOC = """measure : {"entropy", "least_confidence", "margin"}, default="entropy"
        The uncertainty of a row, scaled to [0, 1]: its entropy over ``log
        C``, ``(1 - max p) C / (C - 1)``, or one minus the margin between
        its two largest probabilities."""


class OverallUncertainty(StoppingCriterion):
    """Stop when the unlabelled rows are, on average, predicted with certainty.

    Zhu, Wang & Hovy's overall-uncertainty method: the mean uncertainty of
    the model over the unlabelled pool is compared with ``threshold`` after
    each round.

    Parameters
    ----------
    threshold : float, default=0.05
        Stop when the mean uncertainty is at most this (in [0, 1]).
    {measure}

    References
    ----------
    .. [1] J. Zhu, H. Wang and E. Hovy, "Multi-Criteria-Based Strategy to
       Stop Active Learning for Data Annotation", COLING 2008.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> from skal.stopping import OverallUncertainty
    >>> X, y = load_digits(return_X_y=True)
    >>> learner = skal.ActiveLearner(LogisticRegression(max_iter=300))
    >>> learner = learner.fit(X[:500], y[:500])
    >>> criterion = OverallUncertainty(threshold=0.5).update(learner, X[500:])
    >>> criterion.should_stop(), criterion.value_ < 0.5
    (True, True)
    """

    _parameter_constraints = dict(_UNCERTAINTY_PARAMS)

    def __init__(self, threshold=0.05, measure="entropy"):
        self.threshold = threshold
        self.measure = measure

    def _observe(self, round_):
        mean = float(_uncertainty(round_.proba_unlabeled, self.measure).mean())
        stop = mean <= self.threshold
        rel = "<=" if stop else ">"
        return (
            stop,
            mean,
            f"mean {self.measure} uncertainty of {round_.n_unlabeled} unlabelled "
            f"rows {mean:.4f} {rel} {self.threshold}",
        )


class MaxConfidence(StoppingCriterion):
    """Stop when even the most uncertain unlabelled row is predicted confidently.

    Zhu & Hovy's max-confidence method: the loop stops when the uncertainty
    of the most uncertain unlabelled row (the one uncertainty sampling would
    query next) is at most ``threshold``. It is the most conservative of the
    confidence-based criteria.

    Parameters
    ----------
    threshold : float, default=0.05
        Stop when the largest uncertainty is at most this (in [0, 1]).
    {measure}

    References
    ----------
    .. [1] J. Zhu and E. Hovy, "Active Learning for Word Sense Disambiguation
       with Methods for Addressing the Class Imbalance Problem", EMNLP-CoNLL
       2007.
    .. [2] J. Zhu, H. Wang, E. Hovy and M. Ma, "Confidence-Based Stopping
       Criteria for Active Learning for Data Annotation", ACM Transactions on
       Speech and Language Processing 6(3), 2010.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> from skal.stopping import MaxConfidence
    >>> X = np.r_[np.zeros((20, 1)), np.full((20, 1), 10.0)]
    >>> y = np.r_[np.zeros(20, int), np.ones(20, int)]
    >>> learner = skal.ActiveLearner(LogisticRegression()).fit(X, y)
    >>> MaxConfidence().update(learner, X).should_stop()
    True
    """

    _parameter_constraints = dict(_UNCERTAINTY_PARAMS)

    def __init__(self, threshold=0.05, measure="entropy"):
        self.threshold = threshold
        self.measure = measure

    def _observe(self, round_):
        worst = float(_uncertainty(round_.proba_unlabeled, self.measure).max())
        stop = worst <= self.threshold
        rel = "<=" if stop else ">"
        return (
            stop,
            worst,
            f"largest {self.measure} uncertainty of {round_.n_unlabeled} "
            f"unlabelled rows {worst:.4f} {rel} {self.threshold}",
        )


for _cls in (OverallUncertainty, MaxConfidence):
    _cls.__doc__ = _cls.__doc__.replace("{measure}", _MEASURE_DOC)
del _cls


class ClassificationChange(_StopSetCriterion):
    """Stop when the model's predictions no longer change between rounds.

    Zhu, Wang & Hovy's classification-change method: the loop stops when no
    unlabelled row's predicted class changed since the previous model (at
    most a share ``threshold`` of them here). The rows compared are a stop
    set drawn from the rows given at the first update (with
    ``stop_set_size=None``, all of them: the paper's unlabelled pool as it
    was then), so that successive models are compared on the same rows.

    Parameters
    ----------
    threshold : float, default=0.0
        The largest share of rows whose prediction may change (0: none,
        as in the paper).
    stop_set_size : int or None, default=None
        Rows compared, drawn uniformly; None uses every row given at the
        first update.
    random_state : int, RandomState instance or None, default=None
        Draws the stop set.

    References
    ----------
    .. [1] J. Zhu, H. Wang and E. Hovy, "Learning a Stopping Criterion for
       Active Learning for Word Sense Disambiguation and Text
       Classification", IJCNLP 2008.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> from skal.stopping import ClassificationChange
    >>> X = np.linspace(-1, 1, 40)[:, None]
    >>> y = (X[:, 0] > 0).astype(int)
    >>> learner = skal.ActiveLearner(LogisticRegression()).fit(X[::4], y[::4])
    >>> criterion = ClassificationChange().update(learner, X)
    >>> criterion.should_stop()  # a first model: nothing to compare with
    False
    >>> learner = learner.teach(X[1::4], y[1::4])
    >>> criterion.update(learner, X).should_stop()
    True
    """

    _parameter_constraints = {
        "threshold": [Interval(numbers.Real, 0.0, 1.0, closed="both")],
        **_STOP_SET_PARAMS,
    }

    def __init__(self, threshold=0.0, stop_set_size=None, random_state=None):
        self.threshold = threshold
        self.stop_set_size = stop_set_size
        self.random_state = random_state

    _needs_pool = False

    def _compare(self, previous, current, learner):
        changed = float(np.mean(previous != current))
        stop = changed <= self.threshold
        rel = "<=" if stop else ">"
        return (
            stop,
            changed,
            f"share of the {len(current)} stop-set predictions that changed "
            f"{changed:.4f} {rel} {self.threshold}",
        )


def delta_f(previous, current, n_classes: int) -> float:
    """Predicted change of F-measure between two models' labelings.

    For a class ``k``, with ``a`` the rows both models assign to ``k`` and
    ``b + c`` the rows exactly one of them assigns to ``k``, the F-measure
    of one model against the other is ``2a / (2a + b + c)`` and its change
    ``1 - 2a / (2a + b + c)``. With two classes, the positive class
    (index 1) is used, as in the paper; with more, the mean over the classes
    either model predicts (one against the rest).

    Parameters
    ----------
    previous, current : array-like of int of shape (n_samples,)
        Class indices in ``0 .. n_classes - 1``.
    n_classes : int

    Returns
    -------
    delta_f : float
        In [0, 1]; 0 when the labelings agree (or neither predicts the
        positive class, with two classes).

    Examples
    --------
    >>> from skal.stopping import delta_f
    >>> round(delta_f([1, 1, 0, 0], [1, 0, 1, 0], 2), 4)  # a=1, b=1, c=1
    0.5
    """
    previous, current = np.asarray(previous), np.asarray(current)
    classes = [1] if n_classes == 2 else range(n_classes)
    changes = []
    for k in classes:
        a = np.sum((previous == k) & (current == k))
        b_c = np.sum((previous == k) != (current == k))
        if a + b_c:
            changes.append(1.0 - 2.0 * a / (2.0 * a + b_c))
    return float(np.mean(changes)) if changes else 0.0


class DeltaF(_StopSetCriterion):
    """Stop when the predicted change of F-measure stays small (ΔF).

    Altschuler & Bloodgood's method: after each round the F-measure of the
    new model's predictions on a stop set, taking the previous model's as
    the reference, estimates how much the model changed
    (:func:`delta_f`: ``1 - 2a / (2a + b + c)``, needing no labels); the
    loop stops when it has been below ``threshold`` for ``window_size``
    successive rounds. The paper is binary; with more classes the change is
    the mean over classes, one against the rest.

    Parameters
    ----------
    threshold : float, default=0.01
        Stop when ΔF is below this for ``window_size`` successive rounds.
    window_size : int, default=3
        Successive rounds below ``threshold`` needed.
    stop_set_size : int or None, default=2000
        Rows of the stop set, drawn uniformly; None uses every row given at
        the first update.
    random_state : int, RandomState instance or None, default=None
        Draws the stop set.

    References
    ----------
    .. [1] M. Altschuler and M. Bloodgood, "Stopping Active Learning Based on
       Predicted Change of F Measure for Text Classification", IEEE ICSC
       2019.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> from skal.stopping import DeltaF
    >>> X = np.linspace(-1, 1, 40)[:, None]
    >>> y = (X[:, 0] > 0).astype(int)
    >>> learner = skal.ActiveLearner(LogisticRegression()).fit(X[::4], y[::4])
    >>> criterion = DeltaF(window_size=1).update(learner, X)
    >>> learner = learner.teach(X[1::4], y[1::4])
    >>> criterion.update(learner, X).should_stop(), criterion.value_
    (True, 0.0)
    """

    _parameter_constraints = {
        "threshold": [Interval(numbers.Real, 0.0, 1.0, closed="right")],
        "window_size": [Interval(numbers.Integral, 1, None, closed="left")],
        **_STOP_SET_PARAMS,
    }

    def __init__(
        self, threshold=0.01, window_size=3, stop_set_size=2000, random_state=None
    ):
        self.threshold = threshold
        self.window_size = window_size
        self.stop_set_size = stop_set_size
        self.random_state = random_state

    _needs_pool = False

    def _compare(self, previous, current, learner):
        value = delta_f(previous, current, len(learner.classes_))
        deltas = getattr(self, "deltas_", [])
        deltas.append(value)
        self.deltas_ = deltas
        recent = deltas[-self.window_size :]
        below = len(recent) == self.window_size and max(recent) < self.threshold
        if below:
            why = (
                f"ΔF < {self.threshold} for the last {self.window_size} rounds "
                f"(latest {value:.4f})"
            )
        else:
            run = 0
            for d in reversed(deltas):
                if d >= self.threshold:
                    break
                run += 1
            why = (
                f"ΔF {value:.4f}; {run} of {self.window_size} successive rounds "
                f"below {self.threshold}"
            )
        return below, value, why


class Budget(StoppingCriterion):
    """Stop at a number of labels or of rounds.

    Parameters
    ----------
    max_labels : int or None, default=None
        Stop once the learner's labelled set has at least this many rows.
    max_rounds : int or None, default=None
        Stop once this many rounds have followed the first update (the
        model of round ``r`` is the ``r + 1``-th update). At least one of
        the two must be set.

    References
    ----------
    .. [1] B. Settles, "Active Learning Literature Survey", Computer Sciences
       Technical Report 1648, University of Wisconsin-Madison, 2009 (on
       stopping: in practice, the loop ends when the labelling budget is
       spent).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> from skal.stopping import Budget
    >>> X, y = load_digits(return_X_y=True)
    >>> learner = skal.ActiveLearner(LogisticRegression(max_iter=200))
    >>> learner = learner.fit(X[:60], y[:60])
    >>> criterion = Budget(max_labels=100).update(learner, X[60:])
    >>> criterion.should_stop(), criterion.reason_
    (False, 'Budget: 60 labels < max_labels=100')
    """

    _parameter_constraints = {
        "max_labels": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "max_rounds": [Interval(numbers.Integral, 0, None, closed="left"), None],
    }

    def __init__(self, max_labels=None, max_rounds=None):
        self.max_labels = max_labels
        self.max_rounds = max_rounds

    _needs_pool = False

    def _check_params(self):
        if self.max_labels is None and self.max_rounds is None:
            raise ValueError(
                "Budget needs max_labels or max_rounds (or both); got "
                "max_labels=None and max_rounds=None"
            )

    def _observe(self, round_):
        n_labeled = int(round_.learner.n_labeled_)
        rounds = self.n_updates_  # updates before this one
        reasons, stop = [], False
        if self.max_labels is not None:
            hit = n_labeled >= self.max_labels
            stop |= hit
            reasons.append(
                f"{n_labeled} labels {'>=' if hit else '<'} "
                f"max_labels={self.max_labels}"
            )
        if self.max_rounds is not None:
            hit = rounds >= self.max_rounds
            stop |= hit
            reasons.append(
                f"{rounds} rounds {'>=' if hit else '<'} max_rounds={self.max_rounds}"
            )
        return stop, float(n_labeled), "; ".join(reasons)


@validate_arguments(
    {
        "criteria": [StoppingCriterion, list, tuple],
        "require": [Options({"any", "all"})],
    }
)
def should_stop(criteria, learner, X_unlabeled, *, version=None, require="any"):
    """Update stopping criteria with a learner's model and say whether to stop.

    The one call a loop makes after each round (a
    :class:`~skal.LabelingSession` after each training): every criterion is
    updated with the model (predictions on the unlabelled rows are computed
    once for all of them), and the decision combines theirs.

    Parameters
    ----------
    criteria : StoppingCriterion or list of StoppingCriterion
        Updated in place; they keep their state across calls.
    learner : ActiveLearner
        Fitted.
    X_unlabeled : array-like of shape (n_unlabeled, ...), tensor or Dataset
        The rows not labelled yet.
    version : hashable or None, default=None
        Identifies the model (see :meth:`StoppingCriterion.update`): a
        call with the version of the previous call updates nothing and
        returns the same answer. None uses ``learner.n_labeled_``.
    require : {"any", "all"}, default="any"
        Stop when any criterion says so, or only when all do.

    Returns
    -------
    stop : bool
    reason : str
        The reasons of the criteria that decided (those that say stop, or
        with ``require="all"`` and no stop, those that do not), one per line.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> from skal.stopping import Budget, OverallUncertainty, should_stop
    >>> X, y = load_digits(return_X_y=True)
    >>> learner = skal.ActiveLearner(LogisticRegression(max_iter=200))
    >>> learner = learner.fit(X[:100], y[:100])
    >>> criteria = [Budget(max_labels=100), OverallUncertainty()]
    >>> should_stop(criteria, learner, X[100:])
    (True, 'Budget: 100 labels >= max_labels=100')
    """
    if isinstance(criteria, StoppingCriterion):
        criteria = [criteria]
    if not criteria:
        raise ValueError("criteria is empty; give at least one StoppingCriterion")
    for i, criterion in enumerate(criteria):
        if not isinstance(criterion, StoppingCriterion):
            raise TypeError(
                f"criteria[{i}] must be a StoppingCriterion, got "
                f"{type(criterion).__name__}"
            )
    round_ = _Round(learner, X_unlabeled)
    for criterion in criteria:
        criterion._update(round_, version)
    stops = [c.stop_ for c in criteria]
    stop = any(stops) if require == "any" else all(stops)
    # the criteria that decided: those whose answer is the decision
    deciding = [c for c in criteria if c.stop_ == stop]
    return stop, "\n".join(c.reason_ for c in deciding)
