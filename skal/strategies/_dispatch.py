"""Where a strategy's scoring runs: in this process, or across a Dask cluster.

The learner asks here for a strategy's picks and utilities. Outside
``joblib.parallel_backend("dask")`` this is the strategy's own
:meth:`~skal.strategies.QueryStrategy.select` or ``utility``. Inside it, a
row-wise strategy's utility is scored in row chunks on the workers
(:func:`skal._parallel.map_rows`) and its top ``n`` taken here; any other
strategy runs here with ``context.client`` set, so that its own
:meth:`~skal.strategies.QueryContext.map_rows` calls run on the workers.
Kept apart from :mod:`skal._parallel`, which knows Dask and nothing of
strategies, so that the two import in one direction only.
"""

from __future__ import annotations

import numpy as np

from .._parallel import active_client, map_rows
from .base import QueryStrategy, top_n


class _UtilityChunk:
    """Picklable ``(context, X) -> strategy.utility(context, X)`` as float64."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __call__(self, context, X):
        return np.asarray(self.strategy.utility(context, X), dtype=np.float64)


def utility(strategy, context, X):
    """The strategy's utility, scored on the cluster when that is exact."""
    client = active_client()
    if client is None or not strategy.row_wise:
        return strategy.utility(context, X)
    parts = map_rows(client, context, X, _UtilityChunk(strategy))
    return np.concatenate(parts) if parts else np.empty(0)


def select(strategy, context, X, n):
    """The strategy's picks, with its scoring on the cluster when active.

    A row-wise strategy's utility is scored in chunks and the top ``n`` taken
    here; any other strategy runs here with ``context.client`` set, so that
    its :meth:`~skal.strategies.QueryContext.map_rows` calls (core-set's and
    BADGE's embeddings) run on the workers.
    """
    client = active_client()
    if client is None:
        return strategy.select(context, X, n)
    if strategy.row_wise and _plain_select(strategy):
        context.scores = utility(strategy, context, X)
        return top_n(context.scores, n, context.random_state)
    context.client = client
    return strategy.select(context, X, n)


def _plain_select(strategy):
    return type(strategy).select is QueryStrategy.select
