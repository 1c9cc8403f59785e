"""Simulated active learning across CV folds and seeds."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state, indexable
from sklearn.utils.validation import column_or_1d
from tqdm.auto import tqdm

from .._data import DatasetOracle, is_torch_dataset, n_samples
from ..validation import HasMethods, Interval, validate_arguments
from ._checkpoint import RunCheckpoint
from ._simulation import (
    LOOP_CONSTRAINTS,
    SETTINGS_CONSTRAINTS,
    check_data,
    check_learner,
    check_pool_size,
    code_digests,
    data_digest,
    learner_digest,
    run_key,
    simulate,
)

# the arguments of a set of simulated runs (active_learning_curve,
# evaluate_stopping, compare_strategies), checked before any run starts
RUNS_CONSTRAINTS = {
    **LOOP_CONSTRAINTS,
    "cv": [
        Interval(Integral, 2, None, closed="left"),
        HasMethods(["split", "get_n_splits"]),
        "iterable",
    ],
    "n_seeds": [Interval(Integral, 1, None, closed="left")],
    "n_jobs": [Integral, None],
    "random_state": ["random_state"],
}
CURVE_CONSTRAINTS = {
    **RUNS_CONSTRAINTS,
    **SETTINGS_CONSTRAINTS,
    "return_queried": ["boolean"],
}


@validate_arguments(CURVE_CONSTRAINTS)
def active_learning_curve(
    learner,
    X,
    y,
    *,
    cv=5,
    n_initial=10,
    query_size=10,
    n_rounds=10,
    n_seeds=1,
    initial="random",
    scoring=None,
    n_jobs=None,
    random_state=None,
    checkpoint_dir=None,
    verbose=0,
    return_queried=False,
):
    """Simulate active learning on labelled data across CV folds and seeds.

    In the spirit of :func:`sklearn.model_selection.learning_curve`, but the
    training set grows by querying: for each CV split and each seed, a clone
    of ``learner`` is fitted on an initial labelled set drawn from the split's
    training part, then ``n_rounds`` times it queries ``query_size`` rows of
    the rest of the training part (the pool) and is taught their labels. The
    model is scored on the split's test part after the initial fit and after
    every round.

    The pool's labels stay hidden: ``y`` is read only for the initial set,
    for rows the strategy has queried (the oracle) and for the test part
    (scoring). Strategies never see test rows.

    Parameters
    ----------
    learner : ActiveLearner
        The unfitted template. Each run uses a clone whose ``random_state`` is
        the run's seed and which declares every class of ``y`` (unless
        ``classes`` is set).
    X : array-like of shape (n_samples, ...)
    y : array-like of shape (n_samples,)
    cv : int, cross-validation generator or iterable, default=5
        As in :func:`~sklearn.model_selection.check_cv` (an int means
        stratified K-fold). A single held-out split is ``[(train, test)]``.
    n_initial : int, default=10
        Size of the initial labelled set; with ``initial="random"`` or
        ``"stratified"`` it has at least one sample of every class present
        in the training part.
    query_size : int, default=10
        Rows labelled per round.
    n_rounds : int, default=10
        Number of query rounds.
    n_seeds : int, default=1
        Runs per split, each with its own initial set and learner seed.
    initial : {"random", "stratified", "kmeans++", "kcenter", "typiclust"}, \
default="random"
        How the initial set is drawn: uniformly (after one sample per class)
        or with class proportions of the training part; or without reading
        any label, by a method of :func:`skal.coldstart.select_label_free`
        in the embedding of the run's untrained network (the raw features
        for other classifiers).
    scoring : str, callable or None, default=None
        Test metric (scorer name or ``scorer(estimator, X, y)``); None uses
        ``learner.score`` (accuracy).
    n_jobs : int or None, default=None
        Runs executed in parallel by joblib, one per (split, seed). Under
        ``joblib.parallel_backend("dask")`` the runs go to a
        ``dask.distributed`` cluster unchanged.
    random_state : int, RandomState instance or None, default=None
        Draws every run's seed (in this process, before dispatch: results do
        not depend on ``n_jobs`` or the backend).
    checkpoint_dir : path-like or None, default=None
        If set, every run commits a checkpoint after each round under
        ``checkpoint_dir/f<split>-s<seed>-<hash>``, the hash covering the data,
        the split, the learner's parameters, ``scoring`` and the settings;
        calling again with the same arguments resumes each run where it
        stopped and gives the same result. Weights are saved with
        ``torch.save(state_dict)`` and loaded with ``weights_only=True``;
        nothing is unpickled. Every file's checksum and the source of the
        learner's classes and functions are checked before resuming; a
        damaged checkpoint, or one written by other code, raises
        :class:`CheckpointError` naming the run's directory.
    verbose : int, default=0
        0 is silent; 1 shows a tqdm bar over runs; 2 also one bar per run over
        its rounds (with the current phase: scoring the pool, training).
    return_queried : bool, default=False
        Also return the labelled rows of every run.

    Returns
    -------
    n_labeled : ndarray of shape (n_rounds + 1,)
        Labelled-set size at each score: ``n_initial + r * query_size``.
    test_scores : ndarray of shape (n_splits * n_seeds, n_rounds + 1)
        Row ``split * n_seeds + seed``.
    queried : ndarray of shape (n_splits * n_seeds, n_initial + n_rounds * \
query_size)
        Only if ``return_queried``: row indices into ``X`` in the order they
        were labelled (initial set first).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.naive_bayes import GaussianNB
    >>> import skal
    >>> from skal.model_selection import active_learning_curve, aulc
    >>> X, y = load_digits(return_X_y=True)
    >>> learner = skal.ActiveLearner(GaussianNB(), "margin")
    >>> n_labeled, scores = active_learning_curve(
    ...     learner, X[:600], y[:600], cv=2, n_initial=20, query_size=20,
    ...     n_rounds=3, n_seeds=2, random_state=0,
    ... )
    >>> n_labeled
    array([20, 40, 60, 80])
    >>> scores.shape
    (4, 4)
    >>> aulc(n_labeled, scores).shape
    (4,)
    """
    X, y, splits, scorer, seeds = prepare_runs(
        learner, X, y, cv, n_initial, query_size, n_rounds, n_seeds, initial,
        scoring, random_state,
    )  # fmt: skip
    settings = dict(
        n_initial=n_initial, query_size=query_size, n_rounds=n_rounds,
        initial=initial,
    )  # fmt: skip

    if checkpoint_dir is not None:
        data_key = data_digest(X, y)
        learner_key = learner_digest(learner, scoring)
        code = code_digests(learner, scoring)

    def checkpoint(split, s, train, test):
        if checkpoint_dir is None:
            return None
        run_settings = {**settings, "seed": int(seeds[split, s])}
        key = run_key(data_key, learner_key, train, test, run_settings)
        return RunCheckpoint(Path(checkpoint_dir) / f"f{split}-s{s}-{key}", code=code)

    jobs = (
        delayed(_run)(
            learner,
            X,
            y,
            train,
            test,
            n_initial=n_initial,
            query_size=query_size,
            n_rounds=n_rounds,
            initial=initial,
            scorer=scorer,
            seed=int(seeds[split, s]),
            checkpoint=checkpoint(split, s, train, test),
            verbose=verbose,
            desc=f"split {split} seed {s}",
        )
        for split, (train, test) in enumerate(splits)
        for s in range(n_seeds)
    )
    results = list(
        tqdm(
            Parallel(n_jobs=n_jobs, return_as="generator")(jobs),
            total=len(splits) * n_seeds,
            disable=verbose < 1,
            desc="active-learning runs",
        )
    )
    n_labeled = n_initial + query_size * np.arange(n_rounds + 1)
    scores = np.array([scores for scores, _ in results])
    if return_queried:
        return n_labeled, scores, np.array([order for _, order in results])
    return n_labeled, scores


def prepare_runs(
    learner, X, y, cv, n_initial, query_size, n_rounds, n_seeds, initial, scoring,
    random_state,
):  # fmt: skip
    """Validate the arguments of a set of simulated runs, then draw their
    splits and seeds; what :func:`active_learning_curve` and
    :func:`~skal.model_selection.evaluate_stopping` share, so that the same
    arguments give both the same runs.

    Returns
    -------
    X, y : the validated data and oracle
    splits : list of (train, test)
    scorer : callable
    seeds : ndarray of shape (n_splits, n_seeds)
    """
    # the scalar arguments were checked by the public function's constraints
    check_learner(learner)
    if not is_torch_dataset(X) and not isinstance(X, list):
        X, y = indexable(X, y)
    X, y = check_data(X, y, learner, ensure_all_finite=False)
    splits = draw_splits(cv, X, y)
    for i, (train, _) in enumerate(splits):
        check_pool_size(len(train), n_initial, query_size, n_rounds, f"split {i}")
    scorer = check_scoring(learner, scoring=scoring)
    seeds = check_random_state(random_state).randint(
        np.iinfo(np.int32).max, size=(len(splits), n_seeds)
    )
    return X, y, splits, scorer, seeds


def draw_splits(cv, X, y) -> list:
    """The (train, test) index pairs of ``cv`` over the rows of ``X``.

    ``y`` stratifies classifier splits, unless it is a Dataset's labels
    (:class:`~skal._data.DatasetOracle`, or None with a Dataset ``X``): those
    are read only when queried, so a Dataset is split without stratification.
    """
    if y is None or isinstance(y, DatasetOracle):
        y_cv = None
    else:
        y_cv = column_or_1d(y)
    cv = check_cv(cv, y_cv, classifier=True)
    rows = np.empty((n_samples(X), 0))
    return [(np.asarray(a), np.asarray(b)) for a, b in cv.split(rows, y_cv)]


def _run(learner, X, y, train, test, **kwargs):
    result = simulate(learner, X, y, train, test, **kwargs)
    return np.asarray(result.scores), result.order
