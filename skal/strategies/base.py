"""The interface every query strategy implements."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from ..validation import check_params
from .context import QueryContext


class QueryStrategy(BaseEstimator):
    """Base class of skal's query strategies.

    A strategy is a small sklearn-style object: its ``__init__`` only stores
    parameters. :class:`~skal.ActiveLearner` clones it into ``strategy_`` at
    ``fit`` and then calls :meth:`select` (for ``query``) or :meth:`utility`
    (for ``utility``) with a :class:`~skal.strategies.QueryContext` that gives
    access to the fitted model and to the labelled set.

    Per-sample strategies implement :meth:`utility` (higher means queried
    earlier) and inherit :meth:`select`, which takes the top ``n`` scores and
    breaks ties at random. Set-based strategies (core-set, BADGE) implement
    :meth:`select` and set ``per_sample = False``.

    :meth:`validate` checks, before the learner trains anything, what can be
    checked without a trained model: the parameters, declared in a
    ``_parameter_constraints`` dict that maps each parameter to its accepted
    forms (``skal.validation``'s constraints: intervals, options, types,
    ``None``...), and what the strategy needs of the estimator. A strategy
    that needs more than its parameters extends it.

    Attributes
    ----------
    per_sample : bool
        Whether the strategy ranks candidates by a per-sample score, i.e.
        whether :meth:`utility` is available.
    default_subset_size : int or None
        How many random pool candidates :meth:`~skal.ActiveLearner.query`
        scores when the learner's ``subset_size`` is None (TiDAL's protocol
        uses 10,000); ``None`` scores the whole pool.
    row_wise : bool
        Whether each candidate's utility depends on that candidate alone (and
        on the fitted model and labelled set) and draws no random numbers.
        Only then may a pool be scored in chunks on several Dask workers
        with the same result (see :doc:`/guide/gpu_dask`). False by default.

    Examples
    --------
    A strategy that queries the samples with the largest first feature:

    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> class FirstFeature(skal.strategies.QueryStrategy):
    ...     def utility(self, context, X):
    ...         return X[:, 0]
    >>> X = np.array([[0.0], [3.0], [1.0], [2.0]])
    >>> learner = skal.ActiveLearner(LogisticRegression(), strategy=FirstFeature())
    >>> learner.fit(X, [0, 1, 0, 1]).query(X, n=2)
    array([1, 3])
    """

    per_sample = True
    default_subset_size = None
    _parameter_constraints: dict = {}

    def validate(self, estimator):
        """Check the parameters and what the strategy needs of the estimator.

        :meth:`skal.ActiveLearner.fit` calls it after cloning the estimator
        and before any training, so that a wrong parameter or an unsuitable
        estimator fails at once rather than at the first query; skal's
        strategies that have parameters or needs call it again when they
        score, so that a strategy used on its own is checked too. The
        default checks the
        parameters against ``_parameter_constraints`` (parameters without a
        constraint are not checked).

        Parameters
        ----------
        estimator : estimator
            The classifier the learner trains (the last step of a pipeline):
            not fitted yet when called by ``fit``, fitted at query time.

        Raises
        ------
        ValueError
            For a parameter with a bad value, or an estimator that lacks
            something the strategy needs (dropout layers for BALD).
        TypeError
            For a parameter of a type no constraint admits, or an estimator
            of the wrong kind (a network at all, a TiDAL head, a loss
            prediction head). A parameter of an admitted type but a bad
            value (out of range, not among the options) is a ValueError.
            The message names the strategy, the parameter, the value and
            the accepted forms.
        """
        check_params(self)

    row_wise = False

    def on_teach(self, context, X, y):
        """React to the samples just taught; does nothing by default.

        :meth:`skal.ActiveLearner.teach` calls it last, after the classifier
        was retrained on the grown labelled set. A strategy that learns from
        the answers (ALBL rewards the arm that chose them) overrides it.

        Parameters
        ----------
        context : QueryContext
            The retrained model; its labelled set ends with the new samples.
        X : array-like of shape (n_new, ...)
            The newly labelled inputs, transformed like the candidates.
        y : ndarray of shape (n_new,)
            Their encoded labels.
        """

    def utility(self, context, X):
        """Score each candidate; higher means more informative.

        Parameters
        ----------
        context : QueryContext
            The fitted model and the labelled set.
        X : array-like of shape (n_candidates, ...)
            Candidates, already transformed by the steps of a pipeline that
            precede the classifier.

        Returns
        -------
        utility : ndarray of shape (n_candidates,)
        """
        raise TypeError(
            f"{type(self).__name__} selects a set of samples jointly and has no "
            "per-sample utility; use ActiveLearner.query instead"
        )

    def select(self, context, X, n):
        """Return the indices of the ``n`` candidates to label, best first.

        Parameters
        ----------
        context : QueryContext
            The fitted model, the labelled set and the random state.
        X : array-like of shape (n_candidates, ...)
            Candidates, already transformed by the preceding pipeline steps.
        n : int
            How many to select, ``1 <= n <= n_candidates``.

        Returns
        -------
        indices : ndarray of shape (n,)
            Distinct row indices into ``X``, most informative first.
        """
        scores = self.utility(context, X)
        if isinstance(context, QueryContext):
            context.scores = scores
        return top_n(scores, n, context.random_state)


def top_n(scores, n, random_state):
    """Indices of the ``n`` largest scores, largest first, ties in random order.

    Parameters
    ----------
    scores : array-like of shape (n_candidates,)
    n : int
    random_state : numpy.random.RandomState

    Returns
    -------
    indices : ndarray of shape (n,)

    Examples
    --------
    >>> import numpy as np
    >>> from skal.strategies import top_n
    >>> top_n(np.array([0.1, 0.9, 0.5]), 2, np.random.RandomState(0))
    array([1, 2])
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-d, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; the strategy produced invalid scores")
    perm = random_state.permutation(len(scores))
    if n < len(scores):
        part = np.argpartition(-scores[perm], n - 1)[:n]
        perm = perm[part]
    order = np.argsort(-scores[perm], kind="stable")
    return perm[order][:n]


def learns_from_answers(strategy) -> bool:
    """Whether ``strategy`` overrides :meth:`QueryStrategy.on_teach`.

    The learner seeds torch for the hook only then, so that strategies
    without one draw nothing from the query generator at ``teach``.
    """
    if isinstance(strategy, DuckTypedStrategy):
        return callable(strategy._hook("on_teach"))
    return type(strategy).on_teach is not QueryStrategy.on_teach


class DuckTypedStrategy(QueryStrategy):
    """A strategy object that does not subclass :class:`QueryStrategy`.

    :func:`~skal.strategies.get_strategy` wraps any object with a ``select``
    method in it, once, so that the learner, the simulations and the
    checkpoints see one protocol. The wrapped object keeps its own methods:
    ``select(context, X, n)`` and, where it defines them, ``utility``,
    ``validate(estimator)`` and ``on_teach(context, X, y)``, and the
    attributes ``per_sample``, ``row_wise`` and ``default_subset_size``
    (otherwise the :class:`QueryStrategy` defaults hold; ``per_sample`` is
    whether it has a ``utility``). A checkpoint stores the wrapped object's
    fitted attributes (those ending in ``_``).

    Parameters
    ----------
    strategy : object
        The object with a ``select`` method. :class:`~skal.ActiveLearner`
        clones the wrapper at ``fit``, which deep-copies it.

    Examples
    --------
    >>> import numpy as np
    >>> from skal.strategies import get_strategy
    >>> class FirstRows:
    ...     def select(self, context, X, n):
    ...         return np.arange(n)
    >>> strategy = get_strategy(FirstRows())
    >>> type(strategy).__name__, strategy.per_sample, strategy.row_wise
    ('DuckTypedStrategy', False, False)
    """

    def __init__(self, strategy):
        self.strategy = strategy

    def _hook(self, name):
        # the one place that reads optional members of a duck-typed object
        return getattr(self.strategy, name, None)

    @property
    def per_sample(self):
        declared = self._hook("per_sample")
        return callable(self._hook("utility")) if declared is None else declared

    @property
    def row_wise(self):
        return bool(self._hook("row_wise"))

    @property
    def default_subset_size(self):
        return self._hook("default_subset_size")

    def validate(self, estimator):
        if callable(self._hook("validate")):
            self.strategy.validate(estimator)

    def on_teach(self, context, X, y):
        if callable(self._hook("on_teach")):
            self.strategy.on_teach(context, X, y)

    def utility(self, context, X):
        if not callable(self._hook("utility")):
            return super().utility(context, X)
        return self.strategy.utility(context, X)

    def select(self, context, X, n):
        return self.strategy.select(context, X, n)
