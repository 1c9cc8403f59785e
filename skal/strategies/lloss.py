"""Learning loss (Yoo & Kweon, CVPR 2019): query the largest predicted losses."""

from __future__ import annotations

from .base import QueryStrategy
from .context import check_net


class LLoss(QueryStrategy):
    """Query the largest losses predicted by a loss prediction head.

    Needs a fitted :class:`skal.LLossClassifier` (Yoo & Kweon, CVPR 2019);
    the utility is the head's predicted loss, computed in eval mode.

    References
    ----------
    .. [1] D. Yoo and I. S. Kweon, "Learning Loss for Active Learning", CVPR
       2019.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(60, 1, 16, 16)
    >>> y = rng.randint(3, size=60)
    >>> net = skal.LLossClassifier(
    ...     skal.nets.SmallCNN, lloss_layers=["features.1", "features.5"],
    ...     max_epochs=2,
    ... )
    >>> learner = skal.ActiveLearner(net, strategy="lloss", random_state=0)
    >>> learner = learner.fit(X[:30], y[:30])
    >>> learner.utility(X[30:]).shape
    (30,)
    """

    def validate(self, estimator):
        super().validate(estimator)
        check_net(
            estimator,
            "lloss",
            method="predict_loss",
            kind="skal.LLossClassifier (a net with a loss prediction head)",
        )

    row_wise = True

    def utility(self, context, X):
        self.validate(context.estimator)
        return context.estimator.predict_loss(X).astype(float)
