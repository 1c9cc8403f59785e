"""Active learning by learning (ALBL): a bandit over query strategies."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.special import softmax
from sklearn.base import clone

from .._data import take
from ..validation import InstanceOf, Interval, check_params
from ._registry import get_strategy
from .base import QueryStrategy


class ALBL(QueryStrategy):
    """Active learning by learning (Hsu & Lin, 2015): EXP4.P over strategies.

    Each query round, the bandit draws one of its sub-strategies (the arms)
    with probability ``p_k`` and lets it select the whole batch. After the
    learner is taught the labels and retrained, the bandit receives a reward,
    the importance-weighted accuracy of the retrained classifier on every
    sample queried through the bandit so far, and updates its weights.

    The exact update, with K arms, log-weights ``l``, ``w = softmax(l)``:

    - probabilities ``p_k = (1 - K p_min) w_k + p_min``;
    - the arm ``s`` is drawn from ``p`` with the learner's random state; each
      sample it selects gets importance weight ``W = 1 / p_s``;
    - after ``teach``, the reward is ``r = sum_i W_i [f(x_i) = y_i] /
      sum_i W_i`` over all samples queried through the bandit (``f`` the
      retrained classifier). Hsu & Lin divide the same sum by ``n T`` (pool
      size times budget); the self-normalized form needs neither and stays
      in [0, 1];
    - EXP4.P with one expert per arm (identity advice, as in libact):
      ``r_hat_k = r [k = s] / p_s``, ``v_hat_k = 1 / p_k`` and
      ``l_k += (p_min / 2) (r_hat_k + v_hat_k sqrt(ln(K / delta) / (K T)))``
      for every arm ``k``.

    The importance weight ``1 / p_s`` is the probability that the batch's
    arm was drawn, not the probability that any arm would have chosen the
    sample, which would need every sub-strategy to run each round (the same
    simplification as the DeepAL implementation). Hsu & Lin include random
    sampling among the arms so that every sample can be drawn; add
    ``"random"`` to ``strategies`` for that.

    The bandit's state (attributes ending in ``_``) lives on the strategy
    object, :class:`~skal.ActiveLearner`'s ``strategy_``: it survives
    ``teach`` rounds and pickling, and a new ``fit`` starts afresh. The
    learner calls :meth:`on_teach` at the end of each ``teach``; a ``teach``
    that does not follow a ``query`` leaves the bandit unchanged.

    Parameters
    ----------
    strategies : sequence of str or QueryStrategy, \
            default=("coreset", "least_confidence")
        The arms: registered names or strategy objects (cloned). The default
        is the combination the dynamicAL paper compares against.
    delta : float, default=0.1
        EXP4.P's confidence parameter, in (0, 1).
    p_min : float or None, default=None
        Minimum probability of each arm, in [0, 1 / K]; None means
        ``1 / (10 K)`` (the DeepAL implementation's choice).
    horizon : int or None, default=None
        T, the number of query rounds planned, in the confidence term; None
        means 1 (as in the DeepAL implementation).

    Attributes
    ----------
    strategies_ : list of QueryStrategy
        The arms in use.
    log_weights_ : ndarray of shape (n_arms,)
        The bandit's log-weights.
    probabilities_ : ndarray of shape (n_arms,)
        The arm probabilities of the most recent draw.
    arm_history_ : list of int
        The arm drawn in each rewarded round.
    reward_history_ : list of float
        The reward of each rewarded round.
    queried_rows_ : ndarray of shape (n_queried,)
        Rows of the learner's labelled set that were queried through the
        bandit.
    importance_weights_ : ndarray of shape (n_queried,)
        Their importance weights ``1 / p_s``.

    References
    ----------
    .. [1] W.-N. Hsu and H.-T. Lin, "Active Learning by Learning", AAAI 2015.
    .. [2] A. Beygelzimer, J. Langford, L. Li, L. Reyzin and R. E. Schapire,
       "Contextual Bandit Algorithms with Supervised Learning Guarantees",
       AISTATS 2011.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> X = np.random.RandomState(0).randn(300, 4)
    >>> y = (X[:, 0] + X[:, 1] > 0).astype(int)
    >>> albl = skal.strategies.ALBL(["least_confidence", "random"])
    >>> learner = skal.ActiveLearner(LogisticRegression(), albl, random_state=0)
    >>> learner = learner.fit(X[:10], y[:10])
    >>> for _ in range(3):
    ...     idx = 10 + learner.query(X[10:], n=5)
    ...     learner = learner.teach(X[idx], y[idx])
    >>> len(learner.strategy_.reward_history_)
    3
    """

    per_sample = False
    _parameter_constraints = {
        "strategies": [InstanceOf((list, tuple))],
        "delta": [Interval(Real, 0, 1, closed="neither")],
        "p_min": [Interval(Real, 0, 1, closed="both"), None],
        "horizon": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        strategies=("coreset", "least_confidence"),
        *,
        delta=0.1,
        p_min=None,
        horizon=None,
    ):
        self.strategies = strategies
        self.delta = delta
        self.p_min = p_min
        self.horizon = horizon

    def validate(self, estimator):
        # the bandit's own parameters, then each arm against the estimator
        self._check_params()
        for arm in self._arms():
            arm.validate(estimator)

    def select(self, context, X, n):
        self._initialize()
        p = exp4p_probabilities(self.log_weights_, self._p_min())
        arm = int(context.random_state.choice(len(p), p=p))
        self.probabilities_ = p
        self.pending_arm_ = arm
        return self.strategies_[arm].select(context, X, n)

    def on_teach(self, context, X, y):
        """Reward the arm that chose the samples just taught; update weights.

        Called by :class:`~skal.ActiveLearner` at the end of ``teach``, after
        the classifier was retrained; also forwarded to every arm.

        Parameters
        ----------
        context : QueryContext
            The retrained model, which the arms' rewards are measured on.
        X : array-like of shape (n_new, ...)
            The samples the pending arm chose, now labelled.
        y : ndarray of shape (n_new,)
            Their labels, encoded as class indices.
        """
        self._initialize()
        for strategy in self.strategies_:
            strategy.on_teach(context, X, y)
        arm = self.pending_arm_
        if arm is None:
            return
        self.pending_arm_ = None
        n_labeled = len(context.y_labeled)
        rows = np.arange(n_labeled - len(y), n_labeled)
        self.queried_rows_ = np.concatenate([self.queried_rows_, rows])
        self.importance_weights_ = np.concatenate(
            [
                self.importance_weights_,
                np.full(len(rows), 1.0 / self.probabilities_[arm]),
            ]
        )
        predicted = context.predict_proba(take(context.X_labeled, self.queried_rows_))
        correct = predicted.argmax(axis=1) == context.y_labeled[self.queried_rows_]
        weights = self.importance_weights_
        reward = float(weights @ correct / weights.sum()) if len(weights) else 0.0
        self.log_weights_ = exp4p_update(
            self.log_weights_,
            self.probabilities_,
            arm,
            reward,
            p_min=self._p_min(),
            delta=self.delta,
            horizon=1 if self.horizon is None else self.horizon,
        )
        self.arm_history_.append(arm)
        self.reward_history_.append(reward)

    def _initialize(self):
        if hasattr(self, "log_weights_"):
            return
        self._check_params()
        self.strategies_ = self._arms()
        k = len(self.strategies_)
        self.log_weights_ = np.zeros(k)
        self.probabilities_ = exp4p_probabilities(self.log_weights_, self._p_min())
        self.pending_arm_ = None
        self.arm_history_ = []
        self.reward_history_ = []
        self.queried_rows_ = np.empty(0, dtype=np.intp)
        self.importance_weights_ = np.empty(0)

    def _p_min(self):
        k = len(self.strategies)
        return 1.0 / (10 * k) if self.p_min is None else float(self.p_min)

    def _arms(self):
        return [clone(s) for s in map(get_strategy, self.strategies)]

    def _check_params(self):
        check_params(self)
        k = len(self.strategies)
        if k == 0:
            raise ValueError("strategies must name at least one strategy, got none")
        if self.p_min is not None and self.p_min > 1 / k:
            raise ValueError(
                f"p_min must be None or in [0, 1/{k}] for {k} strategies, got "
                f"{self.p_min!r}"
            )


def exp4p_probabilities(log_weights, p_min):
    """EXP4.P's arm probabilities ``(1 - K p_min) softmax(l) + p_min``.

    Parameters
    ----------
    log_weights : array-like of shape (n_arms,)
    p_min : float
        In [0, 1 / n_arms].

    Returns
    -------
    p : ndarray of shape (n_arms,)

    Examples
    --------
    >>> from skal.strategies import exp4p_probabilities
    >>> exp4p_probabilities([0.0, 0.0], 0.05).tolist()
    [0.5, 0.5]
    """
    log_weights = np.asarray(log_weights, dtype=float)
    k = len(log_weights)
    return (1.0 - k * p_min) * softmax(log_weights) + p_min


def exp4p_update(log_weights, probabilities, arm, reward, *, p_min, delta, horizon):
    """One EXP4.P update of the log-weights, one expert per arm.

    ``l_k + (p_min / 2) (r_hat_k + v_hat_k sqrt(ln(K / delta) / (K T)))``
    with ``r_hat_k = reward [k = arm] / p_arm`` and ``v_hat_k = 1 / p_k``.

    Parameters
    ----------
    log_weights : array-like of shape (n_arms,)
    probabilities : array-like of shape (n_arms,)
        The probabilities the arm was drawn with.
    arm : int
        The arm that was drawn.
    reward : float
        Its reward, in [0, 1].
    p_min : float
    delta : float
    horizon : int
        T, the number of rounds planned.

    Returns
    -------
    log_weights : ndarray of shape (n_arms,)

    Examples
    --------
    >>> from skal.strategies import exp4p_update
    >>> exp4p_update(
    ...     [0.0, 0.0], [0.5, 0.5], 0, 0.8, p_min=0.1, delta=0.1, horizon=1
    ... ).round(4).tolist()
    [0.2024, 0.1224]
    """
    log_weights = np.asarray(log_weights, dtype=float)
    probabilities = np.asarray(probabilities, dtype=float)
    k = len(log_weights)
    r_hat = np.zeros(k)
    r_hat[arm] = reward / probabilities[arm]
    v_hat = 1.0 / probabilities
    bonus = np.sqrt(np.log(k / delta) / (k * horizon))
    return log_weights + p_min / 2.0 * (r_hat + v_hat * bonus)
