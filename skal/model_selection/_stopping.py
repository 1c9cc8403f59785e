"""Where stopping criteria would stop along simulated learning curves."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone

from .._data import n_samples, take
from ..stopping import StoppingCriterion, _Round
from ..validation import check_params, validate_arguments
from ._curve import RUNS_CONSTRAINTS, prepare_runs
from ._simulation import (
    _net_of,
    load_snapshot,
    simulate,
)


@dataclass
class StoppingEvaluation:
    """Learning curves and the round at which each criterion would stop.

    Parameters
    ----------
    n_labeled : ndarray of shape (n_rounds + 1,)
        Labelled-set size after each round (round 0: the initial set).
    scores : ndarray of shape (n_runs, n_rounds + 1)
        Test scores, one row per (split, seed).
    stop_round : dict of str to ndarray of shape (n_runs,)
        Per criterion and run, the first round after which it said stop,
        or -1 if it never did within the simulated rounds.
    values : dict of str to ndarray of shape (n_runs, n_rounds + 1)
        Per criterion, its statistic (``value_``) after every round.
    reasons : dict of str to list of str
        Per criterion and run, its ``reason_`` at the stop (or at the last
        round if it never stopped).
    """

    n_labeled: np.ndarray
    scores: np.ndarray
    stop_round: dict
    values: dict = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        """One row per criterion: where it stops, and what stopping there costs.

        Over the runs where the criterion stopped: the mean labelled-set
        size at the stop (``labels_at_stop``), the mean test score of the
        model at the stop (``score_at_stop``) and of the last simulated
        round on the same runs (``final_score``), and the mean labels the
        stop saves against the whole simulated budget (``labels_saved``);
        NaN where no run stopped. ``stopped`` is the share of runs that
        stopped; ``n_runs`` their number.

        Returns
        -------
        rows : list of dict
        """
        rows = []
        for name, stop in self.stop_round.items():
            hit = stop >= 0
            if hit.any():
                at = stop[hit]
                labels = self.n_labeled[at]
                row = {
                    "labels_at_stop": float(labels.mean()),
                    "score_at_stop": float(self.scores[hit, at].mean()),
                    "final_score": float(self.scores[hit, -1].mean()),
                    "labels_saved": float((self.n_labeled[-1] - labels).mean()),
                }
            else:
                row = dict.fromkeys(
                    ("labels_at_stop", "score_at_stop", "final_score", "labels_saved"),
                    float("nan"),
                )
            rows.append(
                {
                    "criterion": name,
                    **row,
                    "stopped": float(hit.mean()),
                    "n_runs": len(stop),
                }
            )
        return rows

    def to_string(self) -> str:
        """:meth:`table` as aligned text."""
        rows = self.table()
        width = max([len("criterion")] + [len(r["criterion"]) for r in rows])
        lines = [
            f"{'criterion':<{width}}  {'labels@stop':>11}  {'score@stop':>10}  "
            f"{'final':>6}  {'saved':>6}  {'stopped':>7}"
        ]
        for r in rows:
            lines.append(
                f"{r['criterion']:<{width}}  {r['labels_at_stop']:>11.1f}  "
                f"{r['score_at_stop']:>10.4f}  {r['final_score']:>6.4f}  "
                f"{r['labels_saved']:>6.1f}  {r['stopped']:>7.2f}"
            )
        return "\n".join(lines)


@validate_arguments(RUNS_CONSTRAINTS)
def evaluate_stopping(
    learner,
    X,
    y,
    criteria,
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
) -> StoppingEvaluation:
    """Simulate active learning and record where each stopping criterion stops.

    The runs are those of :func:`active_learning_curve` with the same
    arguments (the same splits, seeds, initial sets and picks). After each
    round, every criterion (a fresh clone per run) is updated with that
    round's model and the training rows still unlabelled, as a loop would
    update it; the first round after which it says stop is recorded, and
    the simulation goes on to ``n_rounds`` so that stopping can be judged
    against the whole curve.

    Parameters
    ----------
    learner : ActiveLearner
        The unfitted template.
    X : array-like of shape (n_samples, ...) or torch Dataset
    y : array-like of shape (n_samples,)
    criteria : dict of str to StoppingCriterion, or list of StoppingCriterion
        The criteria; a list is named by class name (``#2``, ``#3`` added to
        repeated names).
    cv : int, cross-validation generator or iterable, default=5
        As in :func:`active_learning_curve`.
    n_initial : int, default=10
        As in :func:`active_learning_curve`.
    query_size : int, default=10
        As in :func:`active_learning_curve`.
    n_rounds : int, default=10
        As in :func:`active_learning_curve`.
    n_seeds : int, default=1
        As in :func:`active_learning_curve`.
    initial : str, default="random"
        As in :func:`active_learning_curve`.
    scoring : str, callable or None, default=None
        As in :func:`active_learning_curve`.
    n_jobs : int or None, default=None
        As in :func:`active_learning_curve`.
    random_state : int, RandomState instance or None, default=None
        As in :func:`active_learning_curve`.

    Returns
    -------
    StoppingEvaluation

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.naive_bayes import GaussianNB
    >>> import skal
    >>> from skal.model_selection import evaluate_stopping
    >>> from skal.stopping import Budget, StabilizingPredictions
    >>> X, y = load_digits(return_X_y=True)
    >>> result = evaluate_stopping(
    ...     skal.ActiveLearner(GaussianNB(), "margin"), X, y,
    ...     {"kappa": StabilizingPredictions(threshold=0.9, window_size=2),
    ...      "budget": Budget(max_labels=60)},
    ...     cv=2, n_initial=20, query_size=20, n_rounds=4, random_state=0,
    ... )
    >>> result.n_labeled.tolist()
    [20, 40, 60, 80, 100]
    >>> result.stop_round["budget"].tolist()  # 60 labels: after round 2
    [2, 2]
    >>> [row["criterion"] for row in result.table()]
    ['kappa', 'budget']
    """
    X, y, splits, scorer, seeds = prepare_runs(
        learner, X, y, cv, n_initial, query_size, n_rounds, n_seeds, initial,
        scoring, random_state,
    )  # fmt: skip
    criteria = _named_criteria(criteria)
    jobs = (
        delayed(_run)(
            learner,
            X,
            y,
            train,
            test,
            criteria,
            n_initial=n_initial,
            query_size=query_size,
            n_rounds=n_rounds,
            initial=initial,
            scorer=scorer,
            seed=int(seeds[split, s]),
        )
        for split, (train, test) in enumerate(splits)
        for s in range(n_seeds)
    )
    results = Parallel(n_jobs=n_jobs)(jobs)
    n_labeled = n_initial + query_size * np.arange(n_rounds + 1)
    return StoppingEvaluation(
        n_labeled=n_labeled,
        scores=np.array([r[0] for r in results]),
        stop_round={name: np.array([r[1][name] for r in results]) for name in criteria},
        values={name: np.array([r[2][name] for r in results]) for name in criteria},
        reasons={name: [r[3][name] for r in results] for name in criteria},
    )


def _named_criteria(criteria) -> dict:
    if isinstance(criteria, StoppingCriterion):
        criteria = [criteria]
    if isinstance(criteria, dict):
        named = dict(criteria)
    elif isinstance(criteria, list | tuple):
        named = {}
        for criterion in criteria:
            name = type(criterion).__name__
            k = 2
            while name in named:
                name = f"{type(criterion).__name__}#{k}"
                k += 1
            named[name] = criterion
    else:
        raise TypeError(
            "criteria must be a dict of names to StoppingCriterion objects or a "
            f"list of them, got {type(criteria).__name__}"
        )
    if not named:
        raise ValueError("criteria is empty; give at least one StoppingCriterion")
    for name, criterion in named.items():
        if not isinstance(criterion, StoppingCriterion):
            raise TypeError(
                f"criteria[{name!r}] must be a StoppingCriterion, got "
                f"{type(criterion).__name__}"
            )
        # a criterion checks itself at its first update, after the first
        # training: here it is checked before any run starts
        check_params(criterion)
        criterion._check_params()
    return named


def _run(learner, X, y, train, test, criteria, *, n_initial, query_size, **kwargs):
    """One simulated run, then each round's model shown to fresh criteria."""
    result = simulate(
        learner,
        X,
        y,
        train,
        test,
        n_initial=n_initial,
        query_size=query_size,
        keep_snapshots=True,
        **kwargs,
    )
    criteria = {name: clone(c) for name, c in criteria.items()}
    stop_round = dict.fromkeys(criteria, -1)
    values = {name: [] for name in criteria}
    reasons = dict.fromkeys(criteria, "")
    net = _net_of(result.learner)
    scratch = copy.deepcopy(net) if net is not None else None
    in_train = np.zeros(n_samples(X), dtype=bool)
    in_train[train] = True
    for r, snapshot in enumerate(result.snapshots):
        view = load_snapshot(
            result.learner, snapshot, scratch, n_labeled=n_initial + r * query_size
        )
        unlabeled = in_train.copy()
        unlabeled[result.order[: view.n_labeled_]] = False
        round_ = _Round(view, take(X, train[unlabeled[train]]))
        for name, criterion in criteria.items():
            criterion._update(round_, r)
            values[name].append(criterion.value_)
            if stop_round[name] < 0:
                reasons[name] = criterion.reason_
                if criterion.stop_:
                    stop_round[name] = r
    return np.asarray(result.scores), stop_round, values, reasons
