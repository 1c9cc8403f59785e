"""ActiveLearningSimulation: the simulation as an estimator for model selection."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin
from sklearn.metrics import check_scoring
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._data import n_samples
from ..validation import check_params
from ._checkpoint import RunCheckpoint
from ._scoring import aulc
from ._simulation import (
    LOOP_CONSTRAINTS,
    SETTINGS_CONSTRAINTS,
    _net_of,
    check_data,
    check_learner,
    check_pool_size,
    code_digests,
    data_digest,
    learner_digest,
    load_snapshot,
    run_key,
    simulate,
)


class ActiveLearningSimulation(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """An active-learning run as an estimator, so that sklearn can compare strategies.

    ``fit(X, y)`` simulates active learning on ``X`` with ``y`` as the oracle:
    a clone of ``learner`` is fitted on an initial labelled set, then
    ``n_rounds`` times queries ``query_size`` rows of the rest and is taught
    their labels (no other label of ``X`` is read). The model of every round
    is kept, so that :meth:`learning_curve` scores each of them on held-out
    data and :meth:`score` returns the curve's AULC. With
    :func:`~sklearn.model_selection.cross_validate` or
    :class:`~sklearn.model_selection.GridSearchCV` (for example over
    ``{"learner__strategy": [...]}``) strategies are thus chosen by AULC on
    held-out folds.

    Parameters
    ----------
    learner : ActiveLearner
        The unfitted template; cloned, seeded and given every class of ``y``.
    n_initial : int, default=10
        Size of the initial labelled set (at least one sample per class).
    query_size : int, default=10
        Rows labelled per round.
    n_rounds : int, default=10
        Number of query rounds.
    initial : {"random", "stratified", "kmeans++", "kcenter", "typiclust"}, \
default="random"
        How the initial set is drawn (see :func:`active_learning_curve`).
    scoring : str, callable or None, default=None
        Per-round metric of :meth:`learning_curve` and :meth:`score`; None
        uses the learner's ``score`` (accuracy).
    checkpoint_dir : path-like or None, default=None
        Commit a checkpoint after each round under
        ``checkpoint_dir/<hash of data, learner and settings>`` and resume
        from it when fitted again with the same arguments. Every round's
        network weights are kept there (the per-round models need them).
        A damaged checkpoint, or one written by other code, raises
        :class:`CheckpointError`.
    verbose : int, default=0
        2 or more shows a tqdm bar over the rounds.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial set and the learner.

    Attributes
    ----------
    learner_ : ActiveLearner
        The learner after the last round.
    n_labeled_ : ndarray of shape (n_rounds + 1,)
        Labelled-set size of each round's model.
    labeled_indices_ : ndarray of shape (n_initial + n_rounds * query_size,)
        Rows of ``X`` in the order they were labelled.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.naive_bayes import GaussianNB
    >>> from sklearn.model_selection import GridSearchCV
    >>> import skal
    >>> from skal.model_selection import ActiveLearningSimulation
    >>> X, y = load_iris(return_X_y=True)
    >>> sim = ActiveLearningSimulation(
    ...     skal.ActiveLearner(GaussianNB()),
    ...     n_initial=6, query_size=6, n_rounds=3, random_state=0,
    ... )
    >>> search = GridSearchCV(
    ...     sim, {"learner__strategy": ["random", "margin"]}, cv=3
    ... ).fit(X, y)
    >>> search.best_params_["learner__strategy"] in ("random", "margin")
    True
    >>> search.best_estimator_.n_labeled_
    array([ 6, 12, 18, 24])
    """

    _parameter_constraints: dict = {**LOOP_CONSTRAINTS, **SETTINGS_CONSTRAINTS}

    def __init__(
        self,
        learner,
        *,
        n_initial=10,
        query_size=10,
        n_rounds=10,
        initial="random",
        scoring=None,
        checkpoint_dir=None,
        verbose=0,
        random_state=None,
    ):
        self.learner = learner
        self.n_initial = n_initial
        self.query_size = query_size
        self.n_rounds = n_rounds
        self.initial = initial
        self.scoring = scoring
        self.checkpoint_dir = checkpoint_dir
        self.verbose = verbose
        self.random_state = random_state

    def fit(self, X, y=None):
        """Run the simulation with ``y`` as the oracle.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or torch Dataset
        y : array-like of shape (n_samples,) or None, default=None
            None when X is a Dataset of ``(x, y)`` items: the label of an item
            is then read only when the item is queried (or drawn into the
            initial set), and the learner must declare ``classes``.

        Returns
        -------
        self : ActiveLearningSimulation
        """
        check_params(self)
        check_learner(self.learner)
        X, y = check_data(X, y, self.learner)
        check_pool_size(n_samples(X), self.n_initial, self.query_size, self.n_rounds)
        seed = int(
            check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        )
        train = np.arange(n_samples(X))
        checkpoint = None
        if self.checkpoint_dir is not None:
            settings = dict(
                n_initial=self.n_initial, query_size=self.query_size,
                n_rounds=self.n_rounds, initial=self.initial, seed=seed,
            )  # fmt: skip
            key = run_key(
                data_digest(X, y), learner_digest(self.learner), train, None, settings
            )
            checkpoint = RunCheckpoint(
                Path(self.checkpoint_dir) / key,
                keep_weights=True,
                code=code_digests(self.learner),
            )
        result = simulate(
            self.learner,
            X,
            y,
            train,
            n_initial=self.n_initial,
            query_size=self.query_size,
            n_rounds=self.n_rounds,
            initial=self.initial,
            seed=seed,
            checkpoint=checkpoint,
            keep_snapshots=True,
            verbose=self.verbose,
            desc="rounds",
        )
        self.learner_ = result.learner
        self._snapshots = result.snapshots
        self.labeled_indices_ = result.order
        self.n_labeled_ = self.n_initial + self.query_size * np.arange(
            self.n_rounds + 1
        )
        self.classes_ = self.learner_.classes_
        if hasattr(self.learner_, "n_features_in_"):
            self.n_features_in_ = self.learner_.n_features_in_
        return self

    def learning_curve(self, X, y, scoring=None):
        """Score the model of every round on (X, y).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : array-like of shape (n_samples,)
        scoring : str, callable or None, default=None
            Overrides the ``scoring`` parameter for this call.

        Returns
        -------
        scores : ndarray of shape (n_rounds + 1,)
        """
        check_is_fitted(self)
        scorer = check_scoring(
            self.learner_, scoring=self.scoring if scoring is None else scoring
        )
        net = _net_of(self.learner_)
        scratch = copy.deepcopy(net) if net is not None else None
        return np.array(
            [
                scorer(load_snapshot(self.learner_, snap, scratch), X, y)
                for snap in self._snapshots
            ]
        )

    def score(self, X, y, sample_weight=None):
        """AULC of :meth:`learning_curve` on (X, y) — not the final accuracy.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : array-like of shape (n_samples,)
        sample_weight : None
            Not supported; present for sklearn's signature.

        Returns
        -------
        score : float
            In [0, 1] for a metric in [0, 1].
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by the AULC score")
        return aulc(self.n_labeled_, self.learning_curve(X, y))

    def predict(self, X):
        """Predict with the learner after the last round.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.learner_.predict(X)

    def predict_proba(self, X):
        """Class probabilities of the learner after the last round.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        return self.learner_.predict_proba(X)
