"""Each active-learning round's quantities, where skorch callbacks read them.

skorch's loggers (``TensorBoard``, ``WandbLogger``, ``MlflowLogger``,
``NeptuneLogger``, ``PrintLog``) log the net's ``history``, one row per
epoch. :class:`skal.ActiveLearner` puts the round's quantities in every
epoch row of the training it starts, under the keys below, so that a run
can be followed in any of them (TensorBoard groups the keys under ``al``):

- ``al/round``: 0 for the training of ``fit``, then 1, 2, ... for each
  ``teach``;
- ``al/n_labeled``: the number of labelled samples trained on;
- ``al/query_seconds``: the wall-clock seconds of the last ``query``
  before this ``teach``;
- ``al/score_mean``, ``al/score_max``, ``al/score_picked_mean``: the
  strategy's scores of that query (the candidates' utilities, and their
  mean over the picked rows), for strategies that rank by a per-sample
  score (set-based ones, core-set and BADGE, have none).

The net records them at the start of each epoch
(:meth:`skal.NeuralNetClassifier.on_epoch_begin`), before any callback
reads the row.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ._utils import final_step

ROUND = "al/round"
N_LABELED = "al/n_labeled"
QUERY_SECONDS = "al/query_seconds"
SCORE_MEAN = "al/score_mean"
SCORE_MAX = "al/score_max"
SCORE_PICKED_MEAN = "al/score_picked_mean"


def query_summary(seconds, scores, picked) -> dict:
    """The quantities of one query: its duration and the strategy's scores
    (``scores`` None for a strategy without per-sample scores)."""
    out = {QUERY_SECONDS: float(seconds)}
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim == 1 and len(scores) and np.isfinite(scores).all():
            out[SCORE_MEAN] = float(scores.mean())
            out[SCORE_MAX] = float(scores.max())
            out[SCORE_PICKED_MEAN] = float(scores[np.asarray(picked)].mean())
    return out


@contextmanager
def recorded_round(learner):
    """Within the block, every epoch of the learner's network records the
    round's quantities in its history row (skal networks only)."""
    net = final_step(learner.estimator_)
    if not hasattr(net, "_round_values"):
        yield
        return
    values = {ROUND: learner.n_rounds_, N_LABELED: learner.n_labeled_}
    values.update(getattr(learner, "_last_query", None) or {})
    net._round_values = values
    try:
        yield
    finally:
        net._round_values = None
