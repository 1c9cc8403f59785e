"""Compare strategies: a table of AULC and final score, and a plot of curves."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone

from ..strategies import get_strategy_names
from ..validation import Options, validate_arguments, validate_params
from ._curve import CURVE_CONSTRAINTS, active_learning_curve, draw_splits
from ._scoring import aulc


@dataclass
class StrategyComparison:
    """Learning curves of several strategies on the same splits and seeds.

    Parameters
    ----------
    n_labeled : ndarray of shape (n_rounds + 1,)
        Labelled-set size after each round.
    scores : dict of str to ndarray of shape (n_runs, n_rounds + 1)
        Test scores per strategy, one row per (split, seed).
    skipped : dict of str to str
        Strategies that could not run, with the reason.
    queried : dict of str to ndarray of shape (n_runs, n_labels)
        Per strategy and run, the labelled row indices into ``X`` in the
        order they were labelled, initial set first (the initial sets are
        the same for every strategy).
    """

    n_labeled: np.ndarray
    scores: dict
    skipped: dict = field(default_factory=dict)
    queried: dict = field(default_factory=dict)

    def table(self):
        """Strategy × mean ± std of AULC and of the final score, best AULC first.

        Returns
        -------
        table : pandas.DataFrame or dict of str to list
            Columns ``strategy``, ``aulc_mean``, ``aulc_std``, ``final_mean``,
            ``final_std``, ``n_runs`` (a dict of columns without pandas).
        """
        rows = []
        for name, scores in self.scores.items():
            areas = aulc(self.n_labeled, scores)
            rows.append(
                {
                    "strategy": name,
                    "aulc_mean": float(areas.mean()),
                    "aulc_std": float(areas.std()),
                    "final_mean": float(scores[:, -1].mean()),
                    "final_std": float(scores[:, -1].std()),
                    "n_runs": len(scores),
                }
            )
        rows.sort(key=lambda row: -row["aulc_mean"])
        columns = ["strategy", "aulc_mean", "aulc_std", "final_mean", "final_std"]
        columns.append("n_runs")
        try:
            import pandas as pd
        except ImportError:
            return {c: [row[c] for row in rows] for c in columns}
        return pd.DataFrame(rows, columns=columns)

    def to_string(self) -> str:
        """The table as text: ``AULC mean ± std`` and ``final mean ± std``."""
        table = self.table()
        cols = {c: list(table[c]) for c in ("strategy", "aulc_mean", "aulc_std")}
        cols.update({c: list(table[c]) for c in ("final_mean", "final_std")})
        width = max([len("strategy")] + [len(s) for s in cols["strategy"]])
        lines = [f"{'strategy':<{width}}  {'AULC':>15}  {'final':>15}  runs"]
        for i, name in enumerate(cols["strategy"]):
            lines.append(
                f"{name:<{width}}  {cols['aulc_mean'][i]:.4f} ± "
                f"{cols['aulc_std'][i]:.4f}  {cols['final_mean'][i]:.4f} ± "
                f"{cols['final_std'][i]:.4f}  {len(self.scores[name]):>4}"
            )
        for name, reason in self.skipped.items():
            lines.append(f"{name:<{width}}  skipped: {reason}")
        return "\n".join(lines)

    def plot(self, path=None, *, ax=None, title=None, ylabel="test accuracy"):
        """Plot the curves (see :func:`plot_learning_curves`).

        Parameters
        ----------
        path : str or path-like or None, default=None
            Where to save the figure, if given.
        ax : matplotlib Axes or None, default=None
            Axes to draw on; a new figure if None.
        title : str or None, default=None
        ylabel : str, default="test accuracy"

        Returns
        -------
        ax : matplotlib Axes
        """
        return plot_learning_curves(
            self.n_labeled, self.scores, path, ax=ax, title=title, ylabel=ylabel
        )


@validate_arguments({"errors": [Options({"raise", "warn"})]})
def compare_strategies(
    learner, X, y, strategies=None, *, errors="raise", **curve_params
) -> StrategyComparison:
    """Run :func:`active_learning_curve` for several strategies, side by side.

    Every entry gets the same splits (computed once), the same seeds and the
    same initial labelled sets (the same ``random_state``), so the comparison
    is paired: only the strategy, and where an entry brings its own learner,
    the estimator, differ.

    Parameters
    ----------
    learner : ActiveLearner, dict of str to ActiveLearner, or None
        Template whose ``strategy`` is replaced by each entry of
        ``strategies``. A dict maps labels to complete learners, each run
        with its own estimator and strategy, e.g. a
        :class:`~skal.TiDALClassifier` for ``"tidal"`` and a plain network
        for ``"entropy"``; ``strategies`` must then be None. None is allowed
        when every entry of ``strategies`` is a learner.
    X : array-like of shape (n_samples, ...)
    y : array-like of shape (n_samples,)
    strategies : list or dict, default=None
        Names or strategy objects, or a dict mapping labels to names,
        strategy objects or whole :class:`~skal.ActiveLearner` objects (used
        as they are, ignoring ``learner``). None means every registered
        strategy (:func:`skal.strategies.get_strategy_names`) with
        ``learner``, or the entries of ``learner`` when it is a dict.
    errors : {"raise", "warn"}, default="raise"
        With "warn", an entry that fails (for instance a strategy that needs
        a network the model is not) is skipped with a warning and listed in
        ``skipped``.
    **curve_params
        Passed to :func:`active_learning_curve` (``cv``, ``n_initial``,
        ``query_size``, ``n_rounds``, ``n_seeds``, ``n_jobs``,
        ``random_state``, ...). ``return_queried`` is not accepted: the
        labelled rows are always kept in ``queried``.

    Returns
    -------
    StrategyComparison

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.naive_bayes import GaussianNB
    >>> import skal
    >>> from skal.model_selection import compare_strategies
    >>> X, y = load_digits(return_X_y=True)
    >>> kw = dict(cv=2, n_initial=20, query_size=20, n_rounds=2, random_state=0)
    >>> result = compare_strategies(
    ...     skal.ActiveLearner(GaussianNB()), X[:500], y[:500],
    ...     ["random", "margin"], **kw
    ... )
    >>> sorted(result.scores)
    ['margin', 'random']
    >>> list(result.table().columns)[:3]
    ['strategy', 'aulc_mean', 'aulc_std']

    One learner per entry, each with its own estimator:

    >>> learners = {
    ...     "margin (NB)": skal.ActiveLearner(GaussianNB(), "margin"),
    ...     "margin (LR)": skal.ActiveLearner(
    ...         LogisticRegression(max_iter=200), "margin"
    ...     ),
    ... }
    >>> result = compare_strategies(learners, X[:500] / 16, y[:500], **kw)
    >>> sorted(result.scores)
    ['margin (LR)', 'margin (NB)']
    """
    if "return_queried" in curve_params:
        raise TypeError(
            "compare_strategies does not take return_queried; the labelled rows "
            "of every run are in the result's queried attribute"
        )
    unknown = sorted(set(curve_params) - set(CURVE_CONSTRAINTS) - {"scoring"})
    if unknown:
        raise TypeError(
            f"compare_strategies got unexpected keyword arguments {unknown}; "
            "it passes on the parameters of active_learning_curve"
        )
    # checked here, before any entry runs: with errors="warn" an entry's
    # failure would only be a warning
    validate_params("compare_strategies", curve_params, CURVE_CONSTRAINTS)
    entries = _entries(learner, strategies)
    # The splits are drawn once, so that a shuffling splitter without a
    # random_state still gives every entry the same ones.
    splits = draw_splits(curve_params.pop("cv", 5), X, y)
    n_labeled, scores, queried, skipped = None, {}, {}, {}
    for name, run_learner in entries.items():
        try:
            n_labeled, scores[name], queried[name] = active_learning_curve(
                run_learner, X, y, cv=splits, return_queried=True, **curve_params
            )
        except Exception as exc:
            if errors == "raise":
                raise
            scores.pop(name, None)
            reason = f"{type(exc).__name__}: {exc}"
            skipped[name] = reason
            warnings.warn(
                f"strategy {name!r} skipped: {reason}", UserWarning, stacklevel=2
            )
    if n_labeled is None:
        raise ValueError(f"no strategy could run; reasons: {skipped}")
    return StrategyComparison(n_labeled, scores, skipped, queried)


def _is_learner(obj):
    return all(hasattr(obj, name) for name in ("query", "teach", "classes"))


def _entries(learner, strategies):
    """Label -> unfitted learner for every entry of the comparison."""
    if isinstance(learner, Mapping):
        return _mapping_entries(learner, strategies)
    if learner is not None and not _is_learner(learner):
        raise TypeError(
            "learner must be a skal.ActiveLearner, a dict of str to ActiveLearner "
            f"or None, got {type(learner).__name__}"
        )
    if strategies is None:
        if learner is None:
            raise ValueError(
                "learner is None, so strategies must map labels to learners"
            )
        strategies = get_strategy_names()
    if not isinstance(strategies, Mapping):
        strategies = {s if isinstance(s, str) else repr(s): s for s in strategies}
    entries = {}
    for name, value in strategies.items():
        if _is_learner(value):
            entries[str(name)] = clone(value)
        elif learner is None:
            raise ValueError(
                f"strategies[{name!r}] = {value!r} is not a learner, and there is "
                "no learner template to run it with; pass learner=ActiveLearner(...)"
            )
        else:
            entries[str(name)] = clone(learner).set_params(strategy=value)
    return entries


def _mapping_entries(learners, strategies):
    """The entries of ``learner={label: ActiveLearner}``: each brings its
    strategy, so ``strategies`` must be None."""
    if strategies is not None:
        raise ValueError(
            "learner is a dict of learners, so strategies must be None "
            f"(each learner brings its strategy); got strategies={strategies!r}"
        )
    entries = dict(learners)
    if not entries:
        raise ValueError("learner is an empty dict; give at least one learner")
    for name, value in entries.items():
        if not _is_learner(value):
            raise TypeError(
                f"learner[{name!r}] must be a skal.ActiveLearner, got "
                f"{type(value).__name__}"
            )
    return {str(name): clone(value) for name, value in entries.items()}


def plot_learning_curves(
    n_labeled, scores, path=None, *, ax=None, title=None, ylabel="test accuracy"
):
    """Plot mean ± std learning curves, one line and band per strategy.

    Parameters
    ----------
    n_labeled : array-like of shape (n_rounds + 1,)
    scores : dict of str to array-like of shape (n_runs, n_rounds + 1)
    path : path-like or None, default=None
        If set, the figure is saved there (format from the extension).
    ax : matplotlib Axes or None, default=None
        Draw into it; otherwise a new figure is made (without pyplot, so no
        display backend is needed).
    title : str or None, default=None
    ylabel : str, default="test accuracy"

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from skal.model_selection import plot_learning_curves
    >>> ax = plot_learning_curves(
    ...     [10, 20, 30], {"random": np.array([[0.5, 0.6, 0.7], [0.4, 0.6, 0.8]])}
    ... )
    >>> ax.get_xlabel()
    'labelled samples'
    """
    from matplotlib.figure import Figure

    if ax is None:
        ax = Figure(figsize=(6, 4), layout="constrained").add_subplot()
    n_labeled = np.asarray(n_labeled)
    for name, curve in scores.items():
        curve = np.atleast_2d(np.asarray(curve, dtype=float))
        mean, std = curve.mean(axis=0), curve.std(axis=0)
        area = aulc(n_labeled, mean)
        (line,) = ax.plot(n_labeled, mean, marker=".", label=f"{name} ({area:.3f})")
        ax.fill_between(
            n_labeled, mean - std, mean + std, color=line.get_color(), alpha=0.2
        )
    ax.set_xlabel("labelled samples")
    ax.set_ylabel(ylabel)
    ax.legend(title="strategy (AULC)", fontsize="small")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if path is not None:
        ax.figure.savefig(path, dpi=120)
    return ax
