"""Area under the active-learning curve (AULC) and its scorer."""

from __future__ import annotations

import numpy as np


def aulc(n_labeled, scores):
    """Area under the learning curve, normalized by the labelled-size range.

    The trapezoidal area under ``scores`` as a function of ``n_labeled``,
    divided by ``n_labeled[-1] - n_labeled[0]``: the mean score over the
    labelled-size range. Scores in [0, 1] (accuracy) give an AULC in [0, 1];
    a strategy that reaches a good model with fewer labels has a larger one.

    Parameters
    ----------
    n_labeled : array-like of shape (n_points,)
        Labelled-set sizes, strictly increasing, at least two.
    scores : array-like of shape (n_points,) or (n_runs, n_points)
        One curve, or one curve per row (as returned by
        :func:`active_learning_curve`).

    Returns
    -------
    aulc : float or ndarray of shape (n_runs,)

    Examples
    --------
    >>> from skal.model_selection import aulc
    >>> aulc([10, 20, 30], [0.5, 0.7, 0.9])
    0.7
    >>> aulc([10, 20, 30], [[0.5, 0.7, 0.9], [1.0, 1.0, 1.0]])
    array([0.7, 1. ])
    """
    n_labeled = np.asarray(n_labeled, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if n_labeled.ndim != 1 or len(n_labeled) < 2:
        raise ValueError(
            "n_labeled must be a 1-d array of at least two sizes, got shape "
            f"{n_labeled.shape}"
        )
    if np.any(np.diff(n_labeled) <= 0):
        raise ValueError(f"n_labeled must be strictly increasing, got {n_labeled}")
    if scores.ndim not in (1, 2) or scores.shape[-1] != len(n_labeled):
        raise ValueError(
            f"scores must have shape ({len(n_labeled)},) or (n_runs, "
            f"{len(n_labeled)}) to match n_labeled, got {scores.shape}"
        )
    widths = np.diff(n_labeled)
    area = ((scores[..., 1:] + scores[..., :-1]) / 2 * widths).sum(axis=-1)
    result = area / (n_labeled[-1] - n_labeled[0])
    return float(result) if result.ndim == 0 else result


class _AULCScorer:
    """Scores a fitted :class:`ActiveLearningSimulation` by AULC on (X, y).

    Parameters
    ----------
    estimator : ActiveLearningSimulation
        Fitted.
    X : array-like of shape (n_samples, ...)
        Test inputs.
    y : array-like of shape (n_samples,)
        Their labels.
    sample_weight : None
        Accepted for sklearn's scorer interface; not used.
    """

    def __init__(self, scoring=None):
        self.scoring = scoring

    def __call__(self, estimator, X, y, sample_weight=None):
        if not hasattr(estimator, "learning_curve"):
            raise TypeError(
                "the AULC scorer needs a fitted ActiveLearningSimulation (an "
                "estimator with learning_curve), got "
                f"{type(estimator).__name__}"
            )
        curve = estimator.learning_curve(X, y, scoring=self.scoring)
        return aulc(estimator.n_labeled_, curve)

    def __repr__(self):
        return f"make_aulc_scorer(scoring={self.scoring!r})"


def make_aulc_scorer(scoring=None):
    """A scorer: AULC of a fitted simulation's learning curve on held-out data.

    Use it with :func:`~sklearn.model_selection.cross_validate` or
    :class:`~sklearn.model_selection.GridSearchCV` around an
    :class:`ActiveLearningSimulation`: each round's model is scored on the
    held-out fold and the curve's AULC is returned (higher is better).

    Parameters
    ----------
    scoring : str, callable or None, default=None
        The per-round metric (a scorer name or ``scorer(estimator, X, y)``);
        None uses the learner's ``score`` (accuracy).

    Returns
    -------
    scorer : callable
        ``scorer(simulation, X, y) -> float``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.naive_bayes import GaussianNB
    >>> from sklearn.model_selection import cross_validate
    >>> import skal
    >>> from skal.model_selection import ActiveLearningSimulation, make_aulc_scorer
    >>> X, y = load_iris(return_X_y=True)
    >>> sim = ActiveLearningSimulation(
    ...     skal.ActiveLearner(GaussianNB(), strategy="margin"),
    ...     n_initial=6, query_size=6, n_rounds=3, random_state=0,
    ... )
    >>> cv = cross_validate(
    ...     sim, X, y, cv=3,
    ...     scoring={"aulc": make_aulc_scorer(), "final_accuracy": "accuracy"},
    ... )
    >>> bool(0 <= cv["test_aulc"].mean() <= 1)
    True
    """
    return _AULCScorer(scoring)


aulc_scorer = make_aulc_scorer()
