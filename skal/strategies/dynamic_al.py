"""Training-dynamics strategies: dynamicAL."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch

from .._data import to_array as to_numpy
from .._utils import argmax_labels, eval_mode
from ..gradients import PerSampleGradients, sum_gradient
from ..validation import Interval, Options
from .base import QueryStrategy
from .context import check_net


class DynamicAL(QueryStrategy):
    """dynamicAL: query the samples that most increase the training dynamics.

    Wang et al., "Deep Active Learning by Leveraging Training Dynamics"
    (NeurIPS 2022). Each candidate ``x`` is scored by

        Δ(x) = ‖g_x‖² + γ · g_xᵀ G_S

    where ``g_x`` is the gradient of the cross-entropy of ``x`` against its
    pseudo-label, over ALL trainable parameters (BatchNorm affine parameters
    included), and ``G_S`` is the SUM of the labelled samples' gradients
    against their true labels. Scoring runs in eval mode (dropout off,
    BatchNorm on running statistics); the module's train/eval state is
    restored afterwards.

    The scores are exact: squared norms and inner products come from one
    forward and one backward pass per batch and closed forms per layer
    (:class:`skal.gradients.PerSampleGradients`), never from an
    ``n_samples × n_parameters`` matrix, and ``G_S`` is computed batch by
    batch with sum reduction.

    Training protocol of the paper (see the example): Adam with a constant
    learning rate, weights kept across rounds and the optimizer recreated at
    each round (what :meth:`skal.ActiveLearner.teach` does for networks), and
    "train until convergence" judged on the training data only
    (:class:`skal.nets.TrainUntilConvergence`).

    Parameters
    ----------
    gamma : float, default=2.0
        Weight of the cross term. ``2`` is the value the theory gives, ``0``
        ranks by gradient length alone (expected gradient length), and
        ``float("inf")`` ranks by the cross term ``g_xᵀ G_S`` alone.
    pseudo_label : {"argmax", "sample"}, default="argmax"
        The label ``g_x`` is computed against: the predicted class, or a class
        drawn from the predicted probabilities (with the learner's random
        state).
    batch_size : int or None, default=None
        Samples per forward/backward pass, for the candidates and for
        ``G_S``; bounds the memory. None uses the network's
        ``inference_batch_size`` (or its ``iterator_valid__batch_size``).
    fallback : {"vmap", "loop"}, default="vmap"
        How parameters of layers without a closed form are handled (see
        :class:`skal.gradients.PerSampleGradients`).

    References
    ----------
    .. [1] H. Wang, W. Huang, Z. Wu, A. Margenot, H. Tong and J. He, "Deep
       Active Learning by Leveraging Training Dynamics", NeurIPS 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> import skal
    >>> from skal.nets import TrainUntilConvergence
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).reshape(-1, 1, 8, 8)
    >>> net = skal.NeuralNetClassifier(
    ...     skal.nets.SmallCNN, lr=5e-3, max_epochs=30,
    ...     callbacks=[TrainUntilConvergence(threshold=0.97, patience=3)],
    ... )
    >>> learner = skal.ActiveLearner(net, strategy="dynamic_al", random_state=0)
    >>> learner = learner.fit(X[:100], y[:100])
    >>> idx = learner.query(X[100:600], n=20)
    >>> learner = learner.teach(X[100:600][idx], y[100:600][idx])
    >>> learner.n_labeled_
    120
    """

    _parameter_constraints = {
        # closed on the right: gamma=inf ranks by the cross term alone
        "gamma": [Interval(Real, 0, None, closed="both")],
        "pseudo_label": [Options({"argmax", "sample"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "fallback": [Options({"vmap", "loop"})],
    }

    def __init__(
        self, gamma=2.0, pseudo_label="argmax", batch_size=None, fallback="vmap"
    ):
        self.gamma = gamma
        self.pseudo_label = pseudo_label
        self.batch_size = batch_size
        self.fallback = fallback

    @property
    def row_wise(self):
        """Row-wise (see :class:`QueryStrategy`) with argmax pseudo-labels.

        Sampled pseudo-labels draw random numbers, and a ``batch_size`` of
        its own would batch chunks of the pool differently from one process.
        """
        return self.pseudo_label == "argmax" and self.batch_size is None

    def utility(self, context, X):
        """Δ(x) for each candidate (higher is queried first).

        Parameters
        ----------
        context : QueryContext
            Gives the fitted network and the labelled set.
        X : array-like of shape (n_candidates, ...)
            Candidates, already transformed by the preceding pipeline steps.

        Returns
        -------
        utility : ndarray of shape (n_candidates,)
        """
        self.validate(context.estimator)
        net = context.net("dynamic_al")
        module = net.module_
        gamma = float(self.gamma)
        with eval_mode(module):
            engine = PerSampleGradients(module, fallback=self.fallback)
            g_s = None
            if gamma != 0.0:
                labelled = net.iter_batches(
                    context.X_labeled, context.y_labeled, self.batch_size
                )
                g_s = sum_gradient(module, labelled)
            targets = self._targets(context.random_state)
            # kept on the net's device until the end: on a GPU the loop does
            # not wait for each batch's results
            sq, dots = [], []
            for xb, _ in net.iter_batches(X, batch_size=self.batch_size):
                stats = engine.stats(
                    xb, targets, vector=g_s, norms=not math.isinf(gamma)
                )
                if stats.sq_norms is not None:
                    sq.append(stats.sq_norms)
                if stats.dots is not None:
                    dots.append(stats.dots)
        if math.isinf(gamma):
            return _to_host(dots)
        out = _to_host(sq)
        if gamma != 0.0:
            out = out + gamma * _to_host(dots)
        return out

    def _targets(self, random_state):
        if self.pseudo_label == "argmax":
            return argmax_labels
        return lambda logits: _sample(logits, random_state)

    def validate(self, estimator):
        super().validate(estimator)
        check_net(estimator, "dynamic_al")


def _to_host(parts):
    """Per-batch values, concatenated, as a float64 array."""
    if not parts:
        return np.empty(0)
    return to_numpy(torch.cat(parts)).astype(np.float64)


def _sample(logits, random_state):
    """One class per row drawn from softmax(logits) with a numpy random state."""
    proba = to_numpy(torch.softmax(logits.double(), 1))
    cdf = np.cumsum(proba, axis=1)
    u = random_state.random_sample(len(proba))[:, None] * cdf[:, -1:]
    labels = np.minimum((cdf <= u).sum(1), proba.shape[1] - 1)
    return torch.as_tensor(labels, device=logits.device)
