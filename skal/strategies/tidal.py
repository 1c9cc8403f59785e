"""TiDAL: query by the uncertainty of the predicted training dynamics."""

from __future__ import annotations

import numpy as np
import torch

from .._data import to_array as to_numpy
from .._utils import argmax_labels
from ..validation import Options
from .base import QueryStrategy
from .context import check_net


class TiDAL(QueryStrategy):
    """Uncertainty of the training dynamics predicted by a TiDAL head.

    Needs a fitted :class:`skal.TiDALClassifier`. Each candidate is scored in
    eval mode from the head's predicted training dynamics
    ``q = softmax(head(x))`` (Kye et al., ICCV 2023), in the same forward
    pass as the backbone's logits:

    - ``"entropy"``: ``-sum_c q_c log q_c`` (computed from ``log_softmax``,
      so ``q_c = 0`` never takes ``log 0``);
    - ``"margin"``: with ``y_hat`` the argmax of the backbone's logits,
      ``M = q[y_hat] - max_{c != y_hat} q_c``; the utility is ``1 - M``, so
      the smallest margins are queried first.

    Following the paper's protocol, when the learner's ``subset_size`` is
    None and the pool has more than ``default_subset_size = 10000`` rows,
    :meth:`~skal.ActiveLearner.query` scores a random subset of 10,000
    candidates (set ``subset_size`` on the learner to change that).

    Parameters
    ----------
    score : {"entropy", "margin"}, default="entropy"

    References
    ----------
    .. [1] S. M. Kye, K. Choi, H. Byun and B. Chang, "TiDAL: Learning Training
       Dynamics for Active Learning", ICCV 2023.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(60, 1, 16, 16)
    >>> y = rng.randint(3, size=60)
    >>> net = skal.TiDALClassifier(
    ...     skal.nets.SmallCNN, tidal_layers=["features.1", "features.5"],
    ...     max_epochs=2,
    ... )
    >>> learner = skal.ActiveLearner(net, strategy="tidal", random_state=0)
    >>> learner = learner.fit(X[:30], y[:30])
    >>> learner.query(X[30:], n=5).shape
    (5,)
    """

    default_subset_size = 10_000
    _parameter_constraints = {"score": [Options({"entropy", "margin"})]}

    row_wise = True

    def __init__(self, score="entropy"):
        self.score = score

    def validate(self, estimator):
        super().validate(estimator)
        check_net(
            estimator,
            "tidal",
            method="predict_dynamics",
            kind="skal.TiDALClassifier (a net with a training-dynamics head)",
        )

    def utility(self, context, X):
        self.validate(context.estimator)
        net = context.estimator
        scores = [
            _score(logits, head, self.score)
            for logits, head in net.iter_head_outputs(X)
        ]
        if not scores:
            return np.empty(0)
        return to_numpy(torch.cat(scores)).astype(np.float64)


def _score(logits, head, kind):
    log_q = torch.log_softmax(head.float(), dim=1)
    q = log_q.exp()
    if kind == "entropy":
        return -(q * log_q).sum(dim=1)
    if q.shape[1] < 2:
        return torch.ones(q.shape[0], device=q.device)
    y_hat = argmax_labels(logits)[:, None]
    q_hat = q.gather(1, y_hat).squeeze(1)
    q_other = q.scatter(1, y_hat, float("-inf")).max(dim=1).values
    return 1.0 - (q_hat - q_other)
