"""ActiveLearner: the sklearn meta-estimator that owns the active-learning loop."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_is_fitted,
    column_or_1d,
    validate_data,
)
from skorch import NeuralNet

from . import _parallel
from ._utils import draw_seed, final_step, torch_seed
from .strategies import get_strategy
from .strategies.context import QueryContext, expand_proba

_FLOAT_DTYPES = (np.float64, np.float32)


class ActiveLearner(ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
    """Active learning around any probabilistic classifier.

    The learner owns the labelled set and the loop: :meth:`fit` trains on an
    initial labelled set, :meth:`query` says which pool rows to label next,
    :meth:`teach` adds their labels and trains on, and :meth:`predict`,
    :meth:`predict_proba` and :meth:`score` behave as in any sklearn
    classifier.

    Parameters
    ----------
    estimator : estimator
        A classifier with ``predict_proba``: a :class:`skal.NeuralNetClassifier`,
        any sklearn classifier, or a :class:`~sklearn.pipeline.Pipeline` whose
        last step is one. Strategies that need the network see the inputs
        transformed by the pipeline's earlier steps. It is cloned at ``fit``.
    strategy : str or QueryStrategy, default="entropy"
        A name from :func:`skal.strategies.get_strategy_names` or a strategy
        object; cloned into ``strategy_`` at ``fit``.
    classes : array-like or None, default=None
        Every class label, declared up front. A first labelled set often lacks
        some classes; with ``classes`` declared, labels not seen yet are fine
        and only undeclared labels are errors. If None, the classes are those
        of ``y`` at ``fit``.
    subset_size : int or None, default=None
        If set, :meth:`query` scores a random subset of this many pool rows
        (TiDAL's protocol); returned indices still refer to the full pool.
        If None, the strategy's ``default_subset_size`` applies (10,000 for
        ``"tidal"``, None, i.e. the whole pool, for the others), unless ``n``
        is larger.
    warm_start : bool, default=True
        For a neural network (skorch) classifier, :meth:`teach` continues
        training from the current weights with a freshly created optimizer,
        as the dynamicAL and TiDAL papers do; the pipeline's earlier steps
        keep their fit. If False, or for other classifiers, :meth:`teach`
        refits the whole estimator on the grown labelled set (a network is
        then re-initialized unless its own ``warm_start`` is set).
    random_state : int, RandomState instance or None, default=None
        Seeds the query randomness (random sampling, ties, candidate subsets)
        and torch's generators during training and scoring.

    Attributes
    ----------
    estimator_ : estimator
        The fitted clone of ``estimator``; it is trained on labels encoded as
        ``0 .. n_classes - 1``.
    strategy_ : QueryStrategy
        The strategy in use; it keeps its state across :meth:`teach` calls.
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    n_labeled_ : int
        Number of labelled samples the learner was fitted or taught with.
    X_labeled_ : ndarray of shape (n_labeled, ...)
        The labelled inputs (validated).
    y_labeled_ : ndarray of shape (n_labeled,)
        Their labels.
    n_features_in_ : int
        Number of features (second dimension) of X.
    random_state_ : numpy.random.RandomState
        The random state drawn from ``random_state`` at ``fit``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> X, y = load_digits(return_X_y=True)
    >>> X_pool, y_pool = X[100:], y[100:]
    >>> learner = skal.ActiveLearner(
    ...     LogisticRegression(max_iter=500), strategy="margin", random_state=0
    ... ).fit(X[:100], y[:100])
    >>> idx = learner.query(X_pool, n=20)
    >>> learner = learner.teach(X_pool[idx], y_pool[idx])
    >>> learner.n_labeled_
    120
    """

    def __init__(
        self,
        estimator,
        strategy="entropy",
        *,
        classes=None,
        subset_size=None,
        warm_start=True,
        random_state=None,
    ):
        self.estimator = estimator
        self.strategy = strategy
        self.classes = classes
        self.subset_size = subset_size
        self.warm_start = warm_start
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        """Fit the estimator on an initial labelled set.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Labelled inputs; images may keep their shape (N, C, H, W).
        y : array-like of shape (n_samples,)
            Their labels.

        Returns
        -------
        self : ActiveLearner
        """
        strategy = self._check_params()
        X, y = validate_data(self, X, y, allow_nd=True, dtype=_FLOAT_DTYPES)
        check_classification_targets(y)
        if self.classes is None:
            self.classes_ = np.unique(y)
        else:
            self.classes_ = _check_classes(self.classes)
        y_enc = self._encode(y, "y")
        self._input_shape = X.shape[1:]
        self.random_state_ = check_random_state(self.random_state)
        self.strategy_ = (
            clone(strategy) if isinstance(strategy, BaseEstimator) else strategy
        )
        self.estimator_ = _prepare_estimator(clone(self.estimator), len(self.classes_))
        self.X_labeled_ = X
        self.y_labeled_ = y
        self.n_labeled_ = len(y)
        with torch_seed(draw_seed(self.random_state_)):
            self.estimator_.fit(X, y_enc)
        return self

    def teach(self, X, y):
        """Add labelled samples and train on (warm start for networks).

        The labels are kept in ``X_labeled_``/``y_labeled_`` before training
        starts, so they are not lost if training is interrupted. After
        training, a strategy that defines ``on_teach(context, X, y)`` (a
        stateful one such as :class:`~skal.strategies.ALBL`) is called with
        the new samples, transformed like query candidates, and their encoded
        labels.

        Parameters
        ----------
        X : array-like of shape (n_new, ...)
            Newly labelled inputs, e.g. ``X_pool[learner.query(X_pool, n)]``.
        y : array-like of shape (n_new,)
            Their labels; each must be one of ``classes_``.

        Returns
        -------
        self : ActiveLearner
        """
        check_is_fitted(self)
        X = self._validate_X(X, "X")
        y = column_or_1d(y, warn=True)
        if len(y) != X.shape[0]:
            raise ValueError(
                f"teach: X has {X.shape[0]} rows but y has {len(y)} labels; they "
                "must have the same length"
            )
        self._encode(y, "y")
        self.X_labeled_ = np.concatenate([self.X_labeled_, X])
        self.y_labeled_ = np.concatenate([self.y_labeled_, y])
        self.n_labeled_ = len(self.y_labeled_)
        y_enc = self._encode(self.y_labeled_, "y")
        final = final_step(self.estimator_)
        with torch_seed(draw_seed(self.random_state_)):
            if self.warm_start and isinstance(final, NeuralNet) and final.initialized_:
                final.initialize_optimizer()
                final.partial_fit(self._transform(self.X_labeled_), y_enc)
            else:
                self.estimator_.fit(self.X_labeled_, y_enc)
        on_teach = getattr(self.strategy_, "on_teach", None)
        if callable(on_teach):
            with torch_seed(draw_seed(self.random_state_)):
                on_teach(self._context(), self._transform(X), self._encode(y, "y"))
        return self

    # ---------------------------------------------------------------- query
    def query(self, X_pool, n=1):
        """Indices of the ``n`` pool rows to label next, most informative first.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, ...)
            Unlabelled candidates, shaped like the training inputs.
        n : int, default=1
            How many to select; ``1 <= n <= n_pool`` (and ``<= subset_size``
            when that is set).

        Returns
        -------
        indices : ndarray of shape (n,) and dtype int
            Distinct row indices into ``X_pool``.
        """
        check_is_fitted(self)
        X_pool = self._validate_X(X_pool, "X_pool")
        n_pool = X_pool.shape[0]
        n = _check_n(n, n_pool)
        candidates = np.arange(n_pool)
        subset_size = self.subset_size
        if subset_size is None:
            # the strategy's own protocol (TiDAL: 10,000), unless n needs more
            subset_size = getattr(self.strategy_, "default_subset_size", None)
            if subset_size is not None and n > subset_size:
                subset_size = None
        if subset_size is not None and subset_size < n_pool:
            if n > subset_size:
                raise ValueError(
                    f"n={n} is larger than subset_size={subset_size}; query at "
                    "most subset_size samples or raise subset_size"
                )
            candidates = np.sort(
                self.random_state_.choice(n_pool, subset_size, replace=False)
            )
            X_pool = X_pool[candidates]
        context = self._context()
        with torch_seed(draw_seed(self.random_state_)):
            picked = _parallel.select(
                self.strategy_, context, self._transform(X_pool), n
            )
        picked = np.asarray(picked)
        if (
            picked.shape != (n,)
            or picked.dtype.kind not in "iu"
            or len(np.unique(picked)) != n
            or picked.min() < 0
            or picked.max() >= len(candidates)
        ):
            raise RuntimeError(
                f"strategy {self.strategy_!r} returned {picked!r}, not {n} distinct "
                f"row indices in [0, {len(candidates)})"
            )
        return candidates[picked]

    def utility(self, X_pool):
        """Per-sample informativeness of every pool row; higher is queried first.

        Only per-sample strategies have a utility; set-based ones (core-set,
        BADGE) raise a TypeError. ``subset_size`` does not apply: every row
        is scored.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, ...)

        Returns
        -------
        utility : ndarray of shape (n_pool,) and dtype float
        """
        check_is_fitted(self)
        X_pool = self._validate_X(X_pool, "X_pool")
        context = self._context()
        with torch_seed(draw_seed(self.random_state_)):
            scores = _parallel.utility(self.strategy_, context, self._transform(X_pool))
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (X_pool.shape[0],):
            raise RuntimeError(
                f"strategy {self.strategy_!r} returned utilities of shape "
                f"{scores.shape}, expected ({X_pool.shape[0]},)"
            )
        return scores

    # -------------------------------------------------------------- predict
    def predict_proba(self, X):
        """Class probabilities, one column per class in ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = self._validate_X(X, "X")
        return expand_proba(
            self.estimator_.predict_proba(X),
            final_step(self.estimator_).classes_,
            len(self.classes_),
        )

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    # -------------------------------------------------------------- helpers
    def _check_params(self):
        if self.subset_size is not None and (
            not isinstance(self.subset_size, numbers.Integral)
            or isinstance(self.subset_size, bool)
            or self.subset_size < 1
        ):
            raise ValueError(
                f"subset_size must be None or a positive integer, got "
                f"{self.subset_size!r}"
            )
        if not isinstance(self.warm_start, bool | np.bool_):
            raise ValueError(f"warm_start must be a bool, got {self.warm_start!r}")
        if not hasattr(final_step(self.estimator), "predict_proba"):
            raise TypeError(
                "estimator must be a classifier with predict_proba (or a pipeline "
                f"ending in one); got {type(final_step(self.estimator)).__name__}"
            )
        return get_strategy(self.strategy)

    def _validate_X(self, X, name):
        X_checked = check_array(X, allow_nd=True, dtype=_FLOAT_DTYPES, input_name=name)
        # feature names and count, checked on the input as given
        validate_data(self, X, reset=False, skip_check_array=True)
        X = X_checked
        if X.shape[1:] != self._input_shape:
            raise ValueError(
                f"{name} has samples of shape {X.shape[1:]}, but {type(self).__name__}"
                f" was fitted with samples of shape {self._input_shape}"
            )
        return X

    def _encode(self, y, name):
        classes = self.classes_
        pos = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
        unknown = classes[pos] != y
        if np.any(unknown):
            bad = np.unique(np.asarray(y)[unknown]).tolist()[:10]
            hint = (
                "declare every class up front with ActiveLearner(classes=...)"
                if self.classes is None
                else "add them to classes=..."
            )
            raise ValueError(
                f"{name} contains labels {bad} that are not among the learner's "
                f"classes {classes.tolist()}; {hint}"
            )
        return pos.astype(np.int64)

    def _transform(self, X):
        if isinstance(self.estimator_, Pipeline) and len(self.estimator_) > 1:
            return self.estimator_[:-1].transform(X)
        return X

    def _context(self):
        return QueryContext(
            estimator=final_step(self.estimator_),
            classes=self.classes_,
            X_labeled=self.X_labeled_,
            y_labeled=self._encode(self.y_labeled_, "y"),
            random_state=self.random_state_,
            transform=self._transform,
            learner=self,
        )


def _prepare_estimator(estimator, n_classes):
    """Give a network one output per class, declared before any data."""
    final = final_step(estimator)
    if isinstance(final, NeuralNet) and "classes" in final.get_params(deep=False):
        final.set_params(classes=list(range(n_classes)))
    return estimator


def _check_classes(classes):
    arr = np.asarray(classes)
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError(f"classes must be a non-empty 1-d array-like, got {classes!r}")
    uniq = np.unique(arr)
    if len(uniq) != len(arr):
        raise ValueError(f"classes must not contain duplicates, got {classes!r}")
    return uniq


def _check_n(n, n_pool):
    if n_pool == 0:
        raise ValueError("X_pool is empty; there is nothing to query")
    if not isinstance(n, numbers.Integral) or isinstance(n, bool):
        raise TypeError(f"n must be an integer, got {n!r} of type {type(n).__name__}")
    if not 1 <= n <= n_pool:
        raise ValueError(f"n must be between 1 and the pool size ({n_pool}), got n={n}")
    return int(n)
