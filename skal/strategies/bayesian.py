"""Bayesian baseline: BALD with Monte Carlo dropout."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from torch import nn

from ..validation import Interval
from .base import QueryStrategy
from .context import built_module, check_net

_DROPOUT_TYPES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


class BALD(QueryStrategy):
    """BALD with Monte Carlo dropout (Houlsby et al., 2011; Gal et al., 2017).

    The utility is the mutual information between a candidate's label and
    the network weights, estimated from ``n_passes`` stochastic forward
    passes with dropout active:
    ``MI = H(mean_t p_t) - mean_t H(p_t)`` (natural logarithms).

    During these passes only the dropout modules (``nn.Dropout``,
    ``nn.Dropout1d/2d/3d``, ``nn.AlphaDropout``, ``nn.FeatureAlphaDropout``)
    are in training mode; everything else, BatchNorm included, stays in
    evaluation mode, and every module's mode is restored afterwards.
    Dropout written as ``torch.nn.functional.dropout`` inside ``forward`` is
    not switched on. The dropout masks come from torch's generator, which
    :class:`~skal.ActiveLearner` seeds from its ``random_state``.

    Parameters
    ----------
    n_passes : int, default=10
        Number of stochastic forward passes T (10 in TiDAL's code).

    Raises
    ------
    TypeError
        At ``fit``, if the classifier is not a skorch network.
    ValueError
        At ``fit``, if the network's module has no dropout module.

    References
    ----------
    .. [1] N. Houlsby, F. Huszár, Z. Ghahramani and M. Lengyel, "Bayesian
       Active Learning for Classification and Preference Learning",
       arXiv:1112.5745, 2011.
    .. [2] Y. Gal, R. Islam and Z. Ghahramani, "Deep Bayesian Active Learning
       with Image Data", ICML 2017.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> X = np.random.RandomState(0).randn(200, 5)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = skal.NeuralNetClassifier(
    ...     skal.nets.MLP, module__dropout=0.3, max_epochs=2
    ... )
    >>> learner = skal.ActiveLearner(net, strategy="bald", random_state=0)
    >>> learner = learner.fit(X[:20], y[:20])
    >>> bool((learner.utility(X[20:]) >= 0).all())
    True
    """

    _parameter_constraints = {"n_passes": [Interval(Integral, 1, None, closed="left")]}

    def __init__(self, n_passes=10):
        self.n_passes = n_passes

    def validate(self, estimator):
        # the module of an unfitted net is built, not trained, to be looked at
        super().validate(estimator)
        _dropout_modules(built_module(check_net(estimator, "bald")))

    def utility(self, context, X):
        self.validate(context.estimator)
        net = context.net("bald")
        net.check_is_fitted()
        module = net.module_
        dropouts = _dropout_modules(module)
        scores = []
        for logits in net.iter_logits(X, self.n_passes, train_modules=dropouts):
            probs = torch.softmax(logits.float(), dim=-1)
            scores.append(mutual_information(probs).cpu())
        if not scores:
            return np.empty(0)
        return torch.cat(scores).numpy()


def _dropout_modules(module):
    dropouts = [m for m in module.modules() if isinstance(m, _DROPOUT_TYPES)]
    if not dropouts:
        raise ValueError(
            f"strategy 'bald' needs dropout layers for MC dropout, but the "
            f"module {type(module).__name__} has none; add an nn.Dropout "
            "(e.g. module__dropout=0.2 for skal.nets.MLP)"
        )
    return dropouts


def mutual_information(probs):
    """BALD's mutual information from stochastic predictions.

    Parameters
    ----------
    probs : torch.Tensor or array-like of shape (n_passes, n_samples, n_classes)
        Class probabilities of each stochastic pass.

    Returns
    -------
    mi : torch.Tensor of shape (n_samples,) and dtype float64
        ``H(mean_t p_t) - mean_t H(p_t)`` in nats, clipped at 0 against
        rounding; on the device of ``probs``.

    Examples
    --------
    >>> import torch
    >>> from skal.strategies import mutual_information
    >>> probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two passes disagree
    >>> round(float(mutual_information(probs)[0]), 4)  # log 2
    0.6931
    """
    probs = torch.as_tensor(probs).double()
    if probs.ndim != 3:
        raise ValueError(
            "probs must have shape (n_passes, n_samples, n_classes), got "
            f"{tuple(probs.shape)}"
        )
    mean = probs.mean(0)
    entropy_of_mean = -torch.xlogy(mean, mean).sum(-1)
    mean_entropy = -torch.xlogy(probs, probs).sum(-1).mean(0)
    return (entropy_of_mean - mean_entropy).clamp_(min=0.0)
