"""Uncertainty baselines: random, least confidence, margin, entropy.

The scores are computed batch by batch from
:meth:`~skal.strategies.QueryContext.iter_proba`: for a network, memory holds
one batch of probabilities and the N scores, never the N x C probabilities.
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr

from .._data import n_samples
from .base import QueryStrategy


class RandomSampling(QueryStrategy):
    """Uniform sampling without replacement.

    The utility is an independent uniform draw per candidate from the
    learner's random state, so ``query`` and ``utility`` agree and the choice
    is reproducible under ``random_state``.

    References
    ----------
    .. [1] B. Settles, "Active Learning Literature Survey", Computer Sciences
       Technical Report 1648, University of Wisconsin-Madison, 2009.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> X, y = load_iris(return_X_y=True)
    >>> learner = skal.ActiveLearner(
    ...     LogisticRegression(), strategy="random", random_state=0
    ... ).fit(X[::10], y[::10])
    >>> learner.query(X, n=3).shape
    (3,)
    """

    def utility(self, context, X):
        return context.random_state.random_sample(n_samples(X))


class LeastConfidence(QueryStrategy):
    """Least confidence: utility ``1 - max_c p_c``.

    References
    ----------
    .. [1] A. Culotta and A. McCallum, "Reducing Labeling Effort for Structured
       Prediction Tasks", AAAI 2005.
    .. [2] B. Settles, "Active Learning Literature Survey", Computer Sciences
       Technical Report 1648, University of Wisconsin-Madison, 2009.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> X, y = load_iris(return_X_y=True)
    >>> learner = skal.ActiveLearner(
    ...     LogisticRegression(), strategy=skal.strategies.LeastConfidence()
    ... ).fit(X[::10], y[::10])
    >>> bool((learner.utility(X) >= 0).all())
    True
    """

    row_wise = True

    def utility(self, context, X):
        return _per_batch(context, X, lambda p: 1.0 - p.max(axis=1))


class MarginSampling(QueryStrategy):
    """Margin sampling: smallest gap between the two most probable classes.

    The utility is ``1 - (p_(1) - p_(2))``, so the smallest margin has the
    largest utility and is queried first.

    References
    ----------
    .. [1] T. Scheffer, C. Decomain and S. Wrobel, "Active Hidden Markov Models
       for Information Extraction", Advances in Intelligent Data Analysis
       (IDA), 2001.
    .. [2] B. Settles, "Active Learning Literature Survey", Computer Sciences
       Technical Report 1648, University of Wisconsin-Madison, 2009.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> X, y = load_iris(return_X_y=True)
    >>> learner = skal.ActiveLearner(LogisticRegression(), strategy="margin")
    >>> learner.fit(X[::10], y[::10]).query(X, n=2).shape
    (2,)
    """

    row_wise = True

    def utility(self, context, X):
        return _per_batch(context, X, _margin)


class EntropySampling(QueryStrategy):
    """Entropy of the predicted class distribution, ``-sum_c p_c log p_c``.

    Zero probabilities contribute zero (``0 log 0 = 0``).

    References
    ----------
    .. [1] C. E. Shannon, "A Mathematical Theory of Communication", Bell System
       Technical Journal, 1948.
    .. [2] B. Settles, "Active Learning Literature Survey", Computer Sciences
       Technical Report 1648, University of Wisconsin-Madison, 2009.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> X, y = load_iris(return_X_y=True)
    >>> learner = skal.ActiveLearner(LogisticRegression(), strategy="entropy")
    >>> learner.fit(X[::10], y[::10]).utility(X[:2]).shape
    (2,)
    """

    row_wise = True

    def utility(self, context, X):
        return _per_batch(context, X, lambda p: entr(p).sum(axis=1))


def _margin(proba):
    if proba.shape[1] < 2:
        return np.ones(proba.shape[0])
    top2 = -np.partition(-proba, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def _per_batch(context, X, score):
    """``score`` of each batch of probabilities: N scores, one batch of N x C."""
    parts = [score(proba) for proba in context.iter_proba(X)]
    return np.concatenate(parts) if parts else np.empty(0)
