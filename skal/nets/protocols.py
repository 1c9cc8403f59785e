"""The training protocols of the dynamicAL and TiDAL papers, as net parameters.

Each function returns keyword arguments for a skal network
(:class:`~skal.NeuralNetClassifier`, :class:`~skal.TiDALClassifier`,
:class:`~skal.LLossClassifier`), so a protocol is applied with ``**`` and any
entry can be overridden::

    net = skal.TiDALClassifier(module, tidal_layers=[...], **tidal_protocol())

Both papers keep the weights across rounds and recreate the optimizer at each
round, which is what :meth:`skal.ActiveLearner.teach` does for networks
(``warm_start=True``, the default).
"""

from __future__ import annotations

from numbers import Integral, Real

import torch
from skorch.callbacks import LRScheduler
from torch.optim.lr_scheduler import MultiStepLR

from ..validation import Interval, validate_arguments, validate_params
from .callbacks import TrainUntilConvergence

_POSITIVE = [Interval(Real, 0, None, closed="neither")]
_AT_LEAST_ONE = [Interval(Integral, 1, None, closed="left")]
_NON_NEGATIVE = [Interval(Real, 0, None, closed="left")]
_FRACTION = [Interval(Real, 0, 1, closed="right")]


@validate_arguments(
    {
        "lr": _POSITIVE,
        "batch_size": _AT_LEAST_ONE,
        "min_epochs": _AT_LEAST_ONE,
        "max_epochs": [*_AT_LEAST_ONE, None],
        "threshold": [Interval(Real, 0, 1, closed="both")],
        "patience": [Interval(Integral, 0, None, closed="left")],
    }
)
def dynamic_al_protocol(
    *, lr=1e-3, batch_size=128, min_epochs=10, max_epochs=None, threshold=0.97,
    patience=10,
):  # fmt: skip
    """Net parameters for dynamicAL's protocol (Wang et al., NeurIPS 2022).

    Adam at a constant learning rate without weight decay, and "train until
    convergence" judged on the training data only: each fit (each round)
    trains at least ``min_epochs`` epochs and stops once the training
    accuracy has been at least ``threshold`` for ``patience`` consecutive
    epochs, or after ``max_epochs`` epochs
    (:class:`~skal.nets.TrainUntilConvergence`). Used with an
    :class:`~skal.ActiveLearner` (``warm_start=True``), the network is not
    re-initialised between rounds and the optimizer is recreated.

    Parameters
    ----------
    lr : float, default=1e-3
        The paper's constant learning rate (its code defaults to 5e-3).
    batch_size : int, default=128
    min_epochs : int, default=10
        ``k``: epochs every round trains before it may stop.
    max_epochs : int or None, default=None
        Epochs after which a round stops regardless; None means
        ``2 * min_epochs``, as in the official code.
    threshold : float, default=0.97
        Training accuracy that counts as converged.
    patience : int, default=10
        Consecutive epochs at or above ``threshold`` required.

    Returns
    -------
    params : dict
        ``optimizer``, ``lr``, ``batch_size``, ``max_epochs`` and
        ``callbacks`` (a fresh :class:`~skal.nets.TrainUntilConvergence`
        named ``"convergence"``), for a skal network's constructor.

    See Also
    --------
    tidal_protocol : The TiDAL paper's protocol.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> from skal.nets import dynamic_al_protocol
    >>> params = dynamic_al_protocol(min_epochs=2, patience=2)
    >>> params["optimizer"].__name__, params["max_epochs"]
    ('Adam', 4)
    >>> X = np.random.RandomState(0).randn(200, 4)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = skal.NeuralNetClassifier(skal.nets.MLP, **params).fit(X, y)
    >>> len(net.history) <= 4
    True
    """
    if max_epochs is None:
        max_epochs = 2 * min_epochs
    validate_params(
        "dynamic_al_protocol",
        {"max_epochs": max_epochs},
        {"max_epochs": [Interval(Integral, min_epochs, None, closed="left")]},
    )
    return {
        "optimizer": torch.optim.Adam,
        "lr": lr,
        "batch_size": batch_size,
        "max_epochs": max_epochs,
        "callbacks": [
            (
                "convergence",
                TrainUntilConvergence(
                    threshold=threshold,
                    patience=patience,
                    min_epochs=min_epochs,
                    max_epochs=max_epochs,
                ),
            )
        ],
    }


@validate_arguments(
    {
        "max_epochs": _AT_LEAST_ONE,
        "lr": _POSITIVE,
        "momentum": _NON_NEGATIVE,
        "weight_decay": _NON_NEGATIVE,
        "decay_at": _FRACTION,
        "decay_factor": _FRACTION,
        "batch_size": _AT_LEAST_ONE,
    }
)
def tidal_protocol(
    *, max_epochs=200, lr=0.1, momentum=0.9, weight_decay=5e-4, decay_at=0.8,
    decay_factor=0.1, batch_size=128,
):  # fmt: skip
    """Net parameters for TiDAL's protocol (Kye et al., ICCV 2023).

    SGD with momentum and weight decay (on the backbone and the auxiliary
    head alike), ``max_epochs`` epochs per round, the learning rate
    multiplied by ``decay_factor`` once, after ``decay_at`` of the epochs
    (epoch 160 of 200 in the paper), batches of 128. The schedule restarts
    at every fit: with :meth:`skal.ActiveLearner.teach`, every round starts
    again at ``lr`` with a fresh optimizer and the same decay, as the
    official code does with a new scheduler per cycle.

    The rest of the paper's protocol lives elsewhere: the KL weight
    ``tidal_lambda=1.0`` is :class:`~skal.TiDALClassifier`'s default, and the
    random candidate subset of 10,000 pool samples is the ``"tidal"``
    strategy's ``default_subset_size``. The same parameters give learning
    loss (:class:`~skal.LLossClassifier`) its paper's protocol.

    Parameters
    ----------
    max_epochs : int, default=200
        Epochs per round.
    lr : float, default=0.1
    momentum : float, default=0.9
    weight_decay : float, default=5e-4
    decay_at : float, default=0.8
        Fraction of ``max_epochs`` after which the learning rate decays.
    decay_factor : float, default=0.1
    batch_size : int, default=128

    Returns
    -------
    params : dict
        ``optimizer`` (SGD), ``lr``, ``optimizer__momentum``,
        ``optimizer__weight_decay``, ``batch_size``, ``max_epochs`` and
        ``callbacks`` (a skorch ``LRScheduler`` named ``"lr_scheduler"``
        running :class:`torch.optim.lr_scheduler.MultiStepLR`), for a skal
        network's constructor.

    See Also
    --------
    dynamic_al_protocol : The dynamicAL paper's protocol.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> from skal.nets import tidal_protocol
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.randn(40, 1, 16, 16), rng.randint(3, size=40)
    >>> net = skal.TiDALClassifier(
    ...     skal.nets.SmallCNN, tidal_layers=["features.1", "features.3"],
    ...     classes=[0, 1, 2], **tidal_protocol(max_epochs=5),
    ... ).fit(X, y)
    >>> [round(lr, 4) for lr in net.history[:, "event_lr"]]
    [0.1, 0.1, 0.1, 0.1, 0.01]
    """
    milestone = max(1, round(decay_at * max_epochs))
    scheduler = LRScheduler(
        MultiStepLR,
        milestones=[milestone],
        gamma=decay_factor,
        # a fresh schedule at every fit, not one continued from the history
        last_epoch=-1,
    )
    return {
        "optimizer": torch.optim.SGD,
        "lr": lr,
        "optimizer__momentum": momentum,
        "optimizer__weight_decay": weight_decay,
        "batch_size": batch_size,
        "max_epochs": max_epochs,
        "callbacks": [("lr_scheduler", scheduler)],
    }
