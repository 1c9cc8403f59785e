"""ActiveLearner: the sklearn meta-estimator that owns the active-learning loop."""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils import assert_all_finite, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)
from skorch import NeuralNet
from skorch.callbacks import LRScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau

from ._data import (
    FLOAT_DTYPES,
    KEPT_DTYPES,
    concat_rows,
    dataset_labels,
    is_torch_dataset,
    n_samples,
    take,
    to_array,
)
from ._items import as_item_dataset
from ._persistence import load_state_dicts, restore_strategy_state
from ._rounds import query_summary, recorded_round
from ._utils import draw_seed, encode_labels, final_step, torch_seed
from .strategies import _dispatch, get_strategy
from .strategies.base import learns_from_answers
from .strategies.context import QueryContext, expand_proba
from .validation import HasMethods, Interval, check_params, validate_params


class ActiveLearner(ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
    """Active learning around any probabilistic classifier.

    The learner owns the labelled set and the loop: :meth:`fit` trains on an
    initial labelled set, :meth:`query` says which pool rows to label next,
    :meth:`teach` adds their labels and trains on, and :meth:`predict`,
    :meth:`predict_proba` and :meth:`score` behave as in any sklearn
    classifier.

    Every method that takes X accepts an array (float, or uint8 / float16
    images and, with a network, integer arrays kept in their dtype: the
    network converts each batch), a torch tensor, or, with a
    :class:`skal.NeuralNetClassifier`, a map-style
    ``torch.utils.data.Dataset`` whose items are ``x`` or ``(x, y)``; the
    indices :meth:`query` returns index the rows or items given. With a
    :class:`~sklearn.pipeline.Pipeline`, X reaches the pipeline as given
    (lists of strings, DataFrames): its first step validates it.

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
        training from the current weights with a freshly created optimizer
        and learning-rate schedules restarted from epoch 0, as the dynamicAL
        and TiDAL papers do; the pipeline's earlier steps
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
    n_rounds_ : int
        Number of :meth:`teach` calls since :meth:`fit` (0 after ``fit``).
        With a :class:`skal.NeuralNetClassifier`, each training records the
        round in every epoch's history row (``al/round``, ``al/n_labeled``,
        and the last query's ``al/query_seconds`` and score summary
        ``al/score_mean``, ``al/score_max``, ``al/score_picked_mean``), where
        skorch's loggers, ``TensorBoard`` included, read them.
    X_labeled_ : ndarray of shape (n_labeled, ...), list, DataFrame or Dataset
        The labelled inputs as given (validated arrays; several torch
        Datasets, or a Dataset and arrays, are joined in a ``ConcatDataset``).
    y_labeled_ : ndarray of shape (n_labeled,)
        Their labels.
    n_features_in_ : int
        Number of features (second dimension) of X; not set for a Dataset.
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

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit"])],
        "strategy": [str, HasMethods(["select"])],
        "classes": [None, "array-like"],
        "subset_size": [Interval(Integral, 1, None, closed="left"), None],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
    }

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
    def fit(self, X, y=None):
        """Fit the estimator on an initial labelled set.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), tensor or torch Dataset
            Labelled inputs; images may keep their shape (N, C, H, W) and
            their dtype (uint8).
        y : array-like of shape (n_samples,) or None, default=None
            Their labels; None reads them from the items of a Dataset.

        Returns
        -------
        self : ActiveLearner

        Raises
        ------
        ValueError, TypeError
            Before any training, if a parameter of the learner or of its
            strategy is invalid, or if the strategy cannot work with the
            estimator (see :meth:`skal.strategies.QueryStrategy.validate`).
        """
        X, y, y_enc = self._setup(X, y, "fit")
        with torch_seed(draw_seed(self.random_state_)), recorded_round(self):
            self.estimator_.fit(X, y_enc)
        return self

    def restore(
        self,
        X,
        y=None,
        *,
        weights=None,
        n_initial=None,
        random_state=None,
        strategy_state=None,
        n_rounds=0,
    ):
        """Rebuild a fitted learner from saved state, without training.

        This is how a saved learner comes back (a resumed simulation, a
        reopened :class:`skal.LabelingSession`): the labelled set, the
        network's weights, the query generator and the strategy's state are
        put back, and the learner continues exactly where the saved one
        stood. It is the only other writer of the fitted attributes besides
        :meth:`fit` and :meth:`teach`.

        A network is built as :meth:`fit` builds it (modules, optimizer,
        callbacks, a pipeline's earlier steps), trained for zero epochs, and
        given ``weights``. Other estimators have no weights to load: they
        are refitted on ``(X, y)``, which is what :meth:`teach` does for them.

        Parameters
        ----------
        X : array-like of shape (n_labeled, ...), tensor or torch Dataset
            The labelled inputs, in the order they were taught.
        y : array-like of shape (n_labeled,) or None, default=None
            Their labels; None reads them from the items of a Dataset.
        weights : dict or None, default=None
            For a network: the state dict of each module it registered, by
            name without the trailing underscore (``{"module":
            net.module_.state_dict(), ...}``; a TiDAL net also has
            ``"tidal_module"``). Required for a network; must be None for
            other estimators.
        n_initial : int or None, default=None
            How many of the first rows :meth:`fit` was called with (the
            others came through :meth:`teach`). Under ``warm_start``, a
            pipeline's earlier steps were fitted on those rows only and are
            fitted on them again. None means all rows.
        random_state : tuple or None, default=None
            The query generator's state, as
            ``numpy.random.RandomState.get_state()`` returned it; None keeps
            the generator drawn from ``random_state`` as :meth:`fit` does.
        strategy_state : tuple of (dict, dict) or None, default=None
            The strategy's fitted state, as
            :func:`skal.model_selection.strategy_state` returned it.
        n_rounds : int, default=0
            How many times the saved learner was taught after its fit
            (``n_rounds_``).

        Returns
        -------
        self : ActiveLearner

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> import skal
        >>> from skal.nets import MLP
        >>> X, y = load_digits(return_X_y=True)
        >>> X = X.astype(np.float32) / 16
        >>> net = skal.NeuralNetClassifier(MLP, max_epochs=2, lr=1e-2)
        >>> learner = skal.ActiveLearner(net, random_state=0).fit(X[:50], y[:50])
        >>> weights = {"module": learner.estimator_.module_.state_dict()}
        >>> same = skal.ActiveLearner(net, random_state=0).restore(
        ...     X[:50], y[:50], weights=weights,
        ...     random_state=learner.random_state_.get_state(),
        ... )
        >>> bool((same.query(X[50:], 5) == learner.query(X[50:], 5)).all())
        True
        """
        X, y, y_enc = self._setup(X, y, "restore")
        validate_params(
            "ActiveLearner.restore",
            {"n_initial": n_initial, "n_rounds": n_rounds},
            {
                "n_initial": [Interval(Integral, 1, len(y), closed="both"), None],
                "n_rounds": [Interval(Integral, 0, None, closed="left")],
            },
        )
        final = final_step(self.estimator_)
        if isinstance(final, NeuralNet):
            if weights is None:
                raise ValueError(
                    "restore: weights is None, but the estimator is a network; "
                    "pass the state dicts of its modules"
                )
            rows = len(y)
            if n_initial is not None and self.warm_start:
                rows = int(n_initial)
            X_fit = X if rows == len(y) else take(X, np.arange(rows))
            # zero epochs: everything fit builds, nothing trained
            epochs = final.max_epochs
            final.max_epochs = 0
            try:
                with torch_seed(draw_seed(self.random_state_)):
                    self.estimator_.fit(X_fit, y_enc[:rows])
            finally:
                final.max_epochs = epochs
            load_state_dicts(final, weights)
        else:
            if weights is not None:
                raise ValueError(
                    "restore: weights must be None for an estimator that is not "
                    f"a network (got {type(final).__name__}); it is refitted on "
                    "the labelled set"
                )
            with torch_seed(draw_seed(self.random_state_)):
                self.estimator_.fit(X, y_enc)
        self.n_rounds_ = int(n_rounds)
        # last: fitting drew from the generator and built a fresh strategy
        if random_state is not None:
            self.random_state_.set_state(random_state)
        if strategy_state is not None:
            restore_strategy_state(self.strategy_, *strategy_state)
        return self

    def _with_estimator(self, estimator, n_labeled=None):
        """A shallow copy predicting with another fitted ``estimator`` (a past
        round's model, trained on the first ``n_labeled`` labelled rows);
        this learner is not changed."""
        view = copy.copy(self)
        view.estimator_ = estimator
        if n_labeled is not None:
            view.n_labeled_ = int(n_labeled)
        return view

    def _setup(self, X, y, method):
        """Validate, then set every fitted attribute but the estimator's
        training: what :meth:`fit` and :meth:`restore` share."""
        strategy = self._check_params()
        X = self._check_X(X, "X", reset=True)
        y = self._check_y(X, y, method)
        check_classification_targets(y)
        if self.classes is None:
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                # one output: every query a tie (sklearn's classifiers refuse
                # such a fit too)
                raise ValueError(
                    f"y holds one class ({self.classes_.tolist()!r}); a "
                    "classifier needs at least 2 classes. If the others are "
                    "known but not labelled yet, declare them all with "
                    "ActiveLearner(classes=[...])"
                )
        else:
            self.classes_ = _check_classes(self.classes)
        y_enc = self._encode(y, "y")
        self._input_shape = (
            None if self._passthrough(self.estimator) else _sample_shape(X)
        )
        self.random_state_ = check_random_state(self.random_state)
        self.strategy_ = clone(strategy)
        self.estimator_ = _prepare_estimator(clone(self.estimator), len(self.classes_))
        # the strategy's parameters and needs, before any (long) training
        self.strategy_.validate(final_step(self.estimator_))
        self.X_labeled_ = X
        self.y_labeled_ = y
        self.n_labeled_ = len(y)
        self.n_rounds_, self._last_query = 0, None
        return X, y, y_enc

    def teach(self, X, y=None):
        """Add labelled samples and train on (warm start for networks).

        The labels are kept in ``X_labeled_``/``y_labeled_`` before training
        starts, so they are not lost if training is interrupted. After
        training, a strategy that defines ``on_teach(context, X, y)`` (a
        stateful one such as :class:`~skal.strategies.ALBL`) is called with
        the new samples, transformed like query candidates, and their encoded
        labels.

        Parameters
        ----------
        X : array-like of shape (n_new, ...), tensor or torch Dataset
            Newly labelled inputs, e.g. ``X_pool[learner.query(X_pool, n)]``
            or ``torch.utils.data.Subset(pool, learner.query(pool, n))``.
        y : array-like of shape (n_new,) or None, default=None
            Their labels, each one of ``classes_``; None reads them from the
            items of a Dataset.

        Returns
        -------
        self : ActiveLearner
        """
        check_is_fitted(self)
        X = self._validate_X(X, "X")
        if y is None and is_torch_dataset(X):
            y = dataset_labels(X)
        y = column_or_1d(y, warn=True)
        if len(y) != n_samples(X):
            raise ValueError(
                f"teach: X has {n_samples(X)} rows but y has {len(y)} labels; they "
                "must have the same length"
            )
        self._encode(y, "y")
        self.X_labeled_ = concat_rows(self.X_labeled_, X)
        self.y_labeled_ = np.concatenate([self.y_labeled_, y])
        self.n_labeled_ = len(self.y_labeled_)
        y_enc = self._encode(self.y_labeled_, "y")
        final = final_step(self.estimator_)
        self.n_rounds_ = getattr(self, "n_rounds_", 0) + 1
        with torch_seed(draw_seed(self.random_state_)), recorded_round(self):
            if self.warm_start and isinstance(final, NeuralNet) and final.initialized_:
                final.initialize_optimizer()
                with _restarted_schedules(final):
                    final.partial_fit(self._transform(self.X_labeled_), y_enc)
            else:
                self.estimator_.fit(self.X_labeled_, y_enc)
        self._last_query = None
        # seeded only for a strategy with the hook, so that the others draw
        # nothing from the query generator here
        if learns_from_answers(self.strategy_):
            with torch_seed(draw_seed(self.random_state_)):
                self.strategy_.on_teach(
                    self._context(), self._transform(X), self._encode(y, "y")
                )
        return self

    # ---------------------------------------------------------------- query
    def query(self, X_pool, n=1):
        """Indices of the ``n`` pool rows to label next, most informative first.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, ...), tensor or torch Dataset
            Unlabelled candidates, shaped like the training inputs. A
            Dataset is read in batches (its items' labels are never read).
        n : int, default=1
            How many to select; ``1 <= n <= n_pool`` (and ``<= subset_size``
            when that is set).

        Returns
        -------
        indices : ndarray of shape (n,) and dtype int
            Distinct row (or item) indices into ``X_pool``.
        """
        check_is_fitted(self)
        X_pool = self._validate_X(X_pool, "X_pool")
        n_pool = n_samples(X_pool)
        n = _check_n(n, n_pool)
        candidates = np.arange(n_pool)
        subset_size = self.subset_size
        if subset_size is None:
            # the strategy's own protocol (TiDAL: 10,000), unless n needs more
            subset_size = self.strategy_.default_subset_size
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
            X_pool = take(X_pool, candidates)
        context = self._context()
        start = time.perf_counter()
        with torch_seed(draw_seed(self.random_state_)):
            picked = _dispatch.select(
                self.strategy_, context, self._transform(X_pool), n
            )
        seconds = time.perf_counter() - start
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
        self._last_query = query_summary(seconds, context.scores, picked)
        return candidates[picked]

    def utility(self, X_pool):
        """Per-sample informativeness of every pool row; higher is queried first.

        Only per-sample strategies have a utility; set-based ones (core-set,
        BADGE) raise a TypeError. ``subset_size`` does not apply: every row
        is scored.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, ...), tensor or torch Dataset

        Returns
        -------
        utility : ndarray of shape (n_pool,) and dtype float
        """
        check_is_fitted(self)
        X_pool = self._validate_X(X_pool, "X_pool")
        context = self._context()
        with torch_seed(draw_seed(self.random_state_)):
            scores = _dispatch.utility(self.strategy_, context, self._transform(X_pool))
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (n_samples(X_pool),):
            raise RuntimeError(
                f"strategy {self.strategy_!r} returned utilities of shape "
                f"{scores.shape}, expected ({n_samples(X_pool)},)"
            )
        return scores

    # -------------------------------------------------------------- predict
    def predict_proba(self, X):
        """Class probabilities, one column per class in ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), tensor or torch Dataset

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
        X : array-like of shape (n_samples, ...), tensor or torch Dataset

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    def score(self, X, y=None, sample_weight=None):
        """Mean accuracy on ``(X, y)``; None reads y from a Dataset's items.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), tensor or torch Dataset
        y : array-like of shape (n_samples,) or None, default=None
        sample_weight : array-like of shape (n_samples,) or None, default=None

        Returns
        -------
        score : float
        """
        if y is None and is_torch_dataset(X):
            y = dataset_labels(X)
        return super().score(X, y, sample_weight=sample_weight)

    # -------------------------------------------------------------- helpers
    def _check_params(self):
        check_params(self)
        if not hasattr(final_step(self.estimator), "predict_proba"):
            raise TypeError(
                "estimator must be a classifier with predict_proba (or a pipeline "
                f"ending in one); got {type(final_step(self.estimator)).__name__}"
            )
        return get_strategy(self.strategy)

    def _passthrough(self, estimator):
        """Whether X goes to the estimator as given (a pipeline validates it)."""
        return isinstance(estimator, Pipeline) and len(estimator) > 1

    def _check_X(self, X, name, reset):
        """X as the estimator takes it: Datasets and pipeline inputs as given,
        arrays validated (uint8 and float16 kept, others as float)."""
        estimator = self.estimator if reset else self.estimator_
        X = as_item_dataset(X)  # a datasets.Dataset: read through a DictDataset
        if is_torch_dataset(X):
            if not isinstance(final_step(estimator), NeuralNet) or self._passthrough(
                estimator
            ):
                raise TypeError(
                    f"{name} is a torch Dataset, which needs a skal."
                    "NeuralNetClassifier as the estimator (not a pipeline); got "
                    f"{type(estimator).__name__}"
                )
            if len(X) == 0:
                raise ValueError(f"{name} is an empty Dataset")
            if reset:
                for attr in ("n_features_in_", "feature_names_in_"):
                    self.__dict__.pop(attr, None)
            return X
        if self._passthrough(estimator):
            # feature names and count of tables; the pipeline checks the rest
            if reset or getattr(X, "ndim", None) == 2 or hasattr(X, "columns"):
                validate_data(self, X, reset=reset, skip_check_array=True)
            return X
        if isinstance(X, torch.Tensor):
            X = to_array(X)
        _refuse_item_lists(X, name)
        dtype = FLOAT_DTYPES
        kind = getattr(getattr(X, "dtype", None), "kind", None)
        if getattr(X, "dtype", None) in KEPT_DTYPES or (
            kind in ("i", "u") and isinstance(final_step(estimator), NeuralNet)
        ):
            # kept for a network, which passes integer batches to a module
            # with an embedding as they are (token ids), to others as float32
            dtype = None
        X_checked = check_array(X, allow_nd=True, dtype=dtype, input_name=name)
        # feature names and count, checked on the input as given
        validate_data(self, X, reset=reset, skip_check_array=True)
        return X_checked

    def _check_y(self, X, y, method):
        if y is None:
            if not is_torch_dataset(X):
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the "
                    "target y is None (y may be omitted only when X is a torch "
                    "Dataset of (x, y) items)"
                )
            y = dataset_labels(X)
        y = column_or_1d(y, warn=True)
        if y.dtype.kind == "f":
            assert_all_finite(y, input_name="y")
        check_consistent_length(np.empty(n_samples(X)), y)
        return y

    def _validate_X(self, X, name):
        X = self._check_X(X, name, reset=False)
        shape = _sample_shape(X)
        if shape is not None and self._input_shape is not None:
            if shape != self._input_shape:
                raise ValueError(
                    f"{name} has samples of shape {shape}, but "
                    f"{type(self).__name__} was fitted with samples of shape "
                    f"{self._input_shape}"
                )
        return X

    def _encode(self, y, name):
        hint = (
            "declare every class up front with ActiveLearner(classes=...)"
            if self.classes is None
            else "add them to classes=..."
        )
        return encode_labels(
            y, self.classes_, name=name, owner="the learner's", hint=hint
        )

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


@contextmanager
def _restarted_schedules(net):
    """Learning-rate schedules of a warm-started round start from epoch 0.

    skorch's ``LRScheduler`` builds its schedule at each ``on_train_begin``
    with ``last_epoch = len(history) - 1``, i.e. continuing the previous
    rounds; torch then requires ``initial_lr`` in the param groups, which the
    optimizer :meth:`ActiveLearner.teach` has just created does not have.
    Each round restarts its schedule instead (``last_epoch=-1``), as the
    papers' protocols do (TiDAL: the step decay at epoch 160 of every
    200-epoch cycle). A ``last_epoch`` the user set is left alone.
    """
    restarted = [
        cb
        for _, cb in getattr(net, "callbacks_", [])
        if isinstance(cb, LRScheduler)
        and "last_epoch" not in vars(cb)
        # skorch builds ReduceLROnPlateau without last_epoch: always fresh
        and not _is_plateau(getattr(cb, "policy_", cb.policy))
    ]
    for cb in restarted:
        cb.last_epoch = -1
    try:
        yield
    finally:
        for cb in restarted:
            del cb.last_epoch


def _is_plateau(policy):
    return policy in ("ReduceLROnPlateau", ReduceLROnPlateau) or (
        isinstance(policy, type) and issubclass(policy, ReduceLROnPlateau)
    )


def _refuse_item_lists(X, name):
    """A list of Dataset items, ``[(x, y), ...]``, is what sklearn's
    cross-validation makes of a torch Dataset (it indexes item by item)."""
    if (
        isinstance(X, list)
        and X
        and isinstance(X[0], tuple | list)
        and any(isinstance(v, torch.Tensor) for v in X[0])
    ):
        raise TypeError(
            f"{name} is a list of {type(X[0]).__name__}s holding tensors, as "
            "sklearn's cross-validation and search tools make of a torch Dataset "
            "by indexing it item by item. Give them skorch.helper.SliceDataset("
            "dataset, idx=0) as X and the labels as y, which they split as an "
            "array, or compare strategies with skal.model_selection, which "
            "takes Datasets as they are"
        )


def _sample_shape(X):
    """The shape of one row of an array, or None (Datasets, lists, frames)."""
    if isinstance(X, np.ndarray):
        return X.shape[1:]
    return None


def _prepare_estimator(estimator, n_classes):
    """Give a network one output per class, declared before any data."""
    final = final_step(estimator)
    if isinstance(final, NeuralNet) and "classes" in final.get_params(deep=False):
        final.set_params(classes=list(range(n_classes)))
    return estimator


def _check_classes(classes):
    arr = np.asarray(classes)
    if arr.ndim != 1 or len(arr) < 2:
        raise ValueError(
            f"classes must be a 1-d array-like of at least 2 classes, got {classes!r}"
        )
    uniq = np.unique(arr)
    if len(uniq) != len(arr):
        raise ValueError(f"classes must not contain duplicates, got {classes!r}")
    return uniq


def _check_n(n, n_pool):
    if n_pool == 0:
        raise ValueError("X_pool is empty; there is nothing to query")
    validate_params(
        "ActiveLearner.query",
        {"n": n},
        {"n": [Interval(Integral, 1, n_pool, closed="both")]},
    )
    return int(n)
