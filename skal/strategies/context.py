"""What a strategy sees of the learner when it scores candidates."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
from sklearn.base import clone
from skorch import NeuralNet
from torch import nn

from .._parallel import map_rows
from .._utils import torch_seed


class QueryContext:
    """The fitted model and the labelled set, as a strategy sees them.

    The learner builds one per call of ``query`` or ``utility``. Inputs are
    already transformed by the pipeline steps that precede the classifier.

    Parameters
    ----------
    estimator : estimator
        The fitted classifier (the last step of the learner's pipeline).
    classes : ndarray of shape (n_classes,)
        The learner's classes; the classifier was trained on their indices
        ``0 .. n_classes - 1``.
    X_labeled : array-like of shape (n_labeled, ...)
        The labelled inputs as the learner stores them (before any pipeline
        step); the attribute of the same name is transformed like the
        candidates, on first access.
    y_labeled : ndarray of shape (n_labeled,)
        Their labels, encoded as indices into ``classes``.
    random_state : numpy.random.RandomState
        The learner's random state; strategies draw all randomness from it.
    transform : callable or None, default=None
        The pipeline steps before the classifier (identity if None).
    learner : ActiveLearner or None, default=None
        The learner itself, for strategies that keep state across rounds.

    Attributes
    ----------
    client : distributed.Client or None
        Set by the learner when it queries inside
        ``joblib.parallel_backend("dask")``; :meth:`map_rows` then runs on
        the cluster.
    scores : ndarray of shape (n_candidates,) or None
        The candidates' utilities, set by a strategy that ranks them by one
        (:meth:`QueryStrategy.select`); None for set-based strategies. The
        learner logs their summary (see :attr:`skal.ActiveLearner.n_rounds_`).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skal.strategies import QueryContext
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 2, 2])
    >>> ctx = QueryContext(
    ...     LogisticRegression().fit(X, y), classes=[0, 1, 2], X_labeled=X,
    ...     y_labeled=y, random_state=np.random.RandomState(0),
    ... )
    >>> ctx.predict_proba(X).shape  # a column for the unseen class 1, too
    (4, 3)
    """

    def __init__(
        self,
        estimator: Any,
        classes: np.ndarray,
        X_labeled: Any,
        y_labeled: np.ndarray,
        random_state: np.random.RandomState,
        transform: Callable | None = None,
        learner: Any = None,
    ):
        self.estimator = estimator
        self.classes = np.asarray(classes)
        self._X_labeled_raw = X_labeled
        self.y_labeled = np.asarray(y_labeled)
        self.random_state = random_state
        self._transform = transform
        self.learner = learner
        self.client = None
        self.scores = None

    @cached_property
    def X_labeled(self):
        """The labelled inputs, transformed like the candidates."""
        if self._transform is None:
            return self._X_labeled_raw
        return self._transform(self._X_labeled_raw)

    @property
    def n_classes(self) -> int:
        """Number of classes of the learner."""
        return len(self.classes)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities with one column per learner class.

        Classes the classifier has not seen yet (possible when the learner
        declares ``classes`` up front) get probability 0.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs as the classifier sees them.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes) and dtype float64
        """
        return expand_proba(
            self.estimator.predict_proba(X), self.estimator.classes_, self.n_classes
        )

    def iter_proba(self, X):
        """Yield :meth:`predict_proba`'s rows batch by batch.

        A skal network yields its own batches (``iter_proba``), so a strategy
        that reduces each batch to scores keeps one batch of probabilities in
        memory, not N x C. Other classifiers, and a network whose class
        overrides ``predict_proba`` below the class that defines
        ``iter_proba``, yield all rows at once.

        Parameters
        ----------
        X : array-like of shape (n_candidates, ...)

        Yields
        ------
        proba : ndarray of shape (batch_size, n_classes)
            Float64, one column per learner class.
        """
        est = self.estimator
        if _batches_match_predict_proba(type(est)):
            for proba in est.iter_proba(X):
                yield expand_proba(proba, est.classes_, self.n_classes)
        else:
            yield self.predict_proba(X)

    def map_rows(self, fn: Callable, X) -> list:
        """``fn(context, X)`` over row chunks of ``X``, results in row order.

        In one process this is ``[fn(self, X)]``. With :attr:`client` set,
        ``X`` is split into one contiguous chunk per Dask worker (boundaries
        on multiples of the network's inference batch size, so the forward
        passes see the same batches) and each worker runs ``fn`` on its
        chunk with its own copy of the fitted model; tensors come back on
        the CPU. ``fn`` must be picklable (a module-level function).

        Parameters
        ----------
        fn : callable
            ``fn(context, X_chunk)``, computed row by row.
        X : array-like, tensor or Dataset

        Returns
        -------
        results : list
            One result per chunk.
        """
        if self.client is None:
            return [fn(self, X)]
        return map_rows(self.client, self, X, fn)

    def portable(self) -> QueryContext:
        """This context without the learner, for Dask workers.

        The workers need only the model and the labelled set.

        Returns
        -------
        context : QueryContext
        """
        return QueryContext(
            estimator=self.estimator,
            classes=self.classes,
            X_labeled=self.X_labeled,
            y_labeled=self.y_labeled,
            random_state=self.random_state,
        )

    def net(self, strategy_name: str) -> NeuralNet:
        """The classifier as a skorch network, or a clear error.

        Parameters
        ----------
        strategy_name : str
            Named in the error message.
        """
        return check_net(self.estimator, strategy_name)


def check_net(
    estimator, strategy_name: str, *, method: str | None = None, kind: str = ""
) -> NeuralNet:
    """The estimator, if it is a skorch network; a TypeError otherwise.

    Parameters
    ----------
    estimator : estimator
        The classifier (the last step of the learner's pipeline).
    strategy_name : str
        Named in the error message.
    method : str or None, default=None
        A method the network must have as well (a head's prediction).
    kind : str, default=""
        The kind of network that has ``method``, for the error message.

    Returns
    -------
    net : skorch.NeuralNet

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skal.strategies.context import check_net
    >>> check_net(LogisticRegression(), "bald")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: strategy 'bald' needs a neural network classifier ... LogisticRegression
    """
    if not isinstance(estimator, NeuralNet):
        raise TypeError(
            f"strategy {strategy_name!r} needs a neural network classifier "
            "(skal.NeuralNetClassifier or a pipeline ending in one); got "
            f"{type(estimator).__name__}"
        )
    if method is not None and not hasattr(estimator, method):
        raise TypeError(
            f"strategy {strategy_name!r} needs a {kind}; got {type(estimator).__name__}"
        )
    return estimator


def built_module(net: NeuralNet) -> nn.Module:
    """The net's torch module, built without training if need be.

    A fitted (initialized) net gives its ``module_``. Otherwise a CPU copy of
    the net is initialized, with torch's global random state left as it was,
    so that a strategy can inspect the module's layers before any training;
    the net itself is not touched.

    Parameters
    ----------
    net : skorch.NeuralNet

    Returns
    -------
    module : torch.nn.Module
    """
    if getattr(net, "initialized_", False):
        return net.module_
    with torch_seed(0):
        return clone(net).set_params(device="cpu").initialize().module_


def _batches_match_predict_proba(cls) -> bool:
    """Whether ``cls.iter_proba`` yields what ``cls.predict_proba`` returns:
    it must be defined, and ``predict_proba`` not overridden below it."""
    owners = {}
    for depth, klass in enumerate(cls.__mro__):
        for name in ("iter_proba", "predict_proba"):
            if name in vars(klass):
                owners.setdefault(name, depth)
    return "iter_proba" in owners and owners["iter_proba"] <= owners["predict_proba"]


def expand_proba(proba, seen_classes, n_classes: int) -> np.ndarray:
    """Float64 probabilities with a column for each of ``n_classes`` classes.

    Parameters
    ----------
    proba : array-like of shape (n_samples, len(seen_classes))
        A classifier's ``predict_proba`` output.
    seen_classes : array-like of int
        The classifier's ``classes_``: encoded class indices.
    n_classes : int
        Number of columns of the result; unseen classes get probability 0.
    """
    proba = np.asarray(proba, dtype=np.float64)
    seen = np.asarray(seen_classes).astype(int)
    if proba.shape[1] == n_classes and np.array_equal(seen, np.arange(n_classes)):
        return proba
    full = np.zeros((proba.shape[0], n_classes))
    full[:, seen] = proba
    return full
