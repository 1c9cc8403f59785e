"""Cross-validating active-learning strategies.

Simulate active learning on data that is already labelled — the pool's labels
stay hidden until a strategy queries them — across CV splits and seeds, and
choose a strategy with sklearn's model-selection tools:

- :func:`active_learning_curve` — test scores per (split × seed) and round;
- :func:`aulc`, :func:`make_aulc_scorer` — area under the learning curve;
- :class:`ActiveLearningSimulation` — the simulation as an estimator, for
  ``cross_validate`` and ``GridSearchCV(..., {"learner__strategy": [...]})``;
- :func:`compare_strategies`, :func:`plot_learning_curves` — a table of
  mean ± std AULC and final score, and a plot with mean ± std bands;
- :func:`evaluate_stopping` — where stopping criteria (:mod:`skal.stopping`)
  would stop along simulated curves, and what stopping there costs.

Runs are independent joblib tasks: ``n_jobs`` runs them in parallel, and the
same call runs on a ``dask.distributed`` cluster inside
``joblib.parallel_backend("dask")`` (install ``skal[dask]``). With
``checkpoint_dir`` every run commits a checkpoint after each round and
resumes from it; a damaged or foreign checkpoint raises
:class:`CheckpointError`. :func:`strategy_state` and
:func:`restore_strategy_state` save and restore a strategy's fitted state
without pickling, for other resumable loops.
"""

from .._persistence import CheckpointError, restore_strategy_state, strategy_state
from ._compare import StrategyComparison, compare_strategies, plot_learning_curves
from ._curve import active_learning_curve
from ._estimator import ActiveLearningSimulation
from ._scoring import aulc, aulc_scorer, make_aulc_scorer
from ._stopping import StoppingEvaluation, evaluate_stopping

__all__ = [
    "ActiveLearningSimulation",
    "CheckpointError",
    "StoppingEvaluation",
    "StrategyComparison",
    "active_learning_curve",
    "aulc",
    "aulc_scorer",
    "compare_strategies",
    "evaluate_stopping",
    "make_aulc_scorer",
    "plot_learning_curves",
    "restore_strategy_state",
    "strategy_state",
]
