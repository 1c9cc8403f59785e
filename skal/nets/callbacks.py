"""skorch callbacks for active-learning training protocols."""

from __future__ import annotations

from numbers import Integral, Real

import torch
from skorch.callbacks import Callback

from .._utils import logits_of
from ..validation import Interval, check_params


class TrainUntilConvergence(Callback):
    """Stop each fit once the training accuracy has stayed high long enough.

    dynamicAL's "train until convergence" protocol: within one call of
    ``fit`` or ``partial_fit`` (one active-learning round), training stops at
    the end of the first epoch that is at least ``min_epochs`` into the round
    and after which the training accuracy has been at least ``threshold``
    for ``patience`` consecutive epochs, or after ``max_epochs`` epochs of
    the round, whichever comes first. The net's own ``max_epochs`` still
    bounds each round; set it at least as large.

    Only training data is looked at: the accuracy is the running accuracy of
    the training batches of the epoch (train mode, as the official code
    computes it), recorded in the history as ``train_acc``; validation
    batches are ignored. The counters are reset at the start of every fit,
    so each round is judged on its own.

    Like skorch's ``EarlyStopping``, the callback stops by raising
    ``KeyboardInterrupt``, which skorch's ``partial_fit`` catches.

    Parameters
    ----------
    threshold : float, default=0.97
        Training accuracy that counts as converged.
    patience : int, default=10
        Consecutive epochs at or above ``threshold`` required.
    min_epochs : int, default=1
        Epochs to train in each round before stopping is allowed.
    max_epochs : int or None, default=None
        Epochs after which a round stops regardless; None leaves the bound
        to the net's ``max_epochs``.

    Attributes
    ----------
    epochs_ : int
        Epochs trained in the current (or last) round.
    streak_ : int
        Consecutive epochs at or above ``threshold`` at the end of the round.
    converged_ : bool
        Whether the last round stopped because it converged.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> from skal.nets import TrainUntilConvergence
    >>> X = np.random.RandomState(0).randn(200, 4)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> stop = TrainUntilConvergence(threshold=0.9, patience=2)
    >>> net = skal.NeuralNetClassifier(
    ...     skal.nets.MLP, lr=1e-2, max_epochs=100, callbacks=[stop]
    ... ).fit(X, y)
    >>> stop.converged_, len(net.history) < 100
    (True, True)
    """

    _parameter_constraints: dict = {
        "threshold": [Interval(Real, 0, 1, closed="both")],
        "patience": [Interval(Integral, 0, None, closed="left")],
        "min_epochs": [Interval(Integral, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, threshold=0.97, patience=10, min_epochs=1, max_epochs=None):
        self.threshold = threshold
        self.patience = patience
        self.min_epochs = min_epochs
        self.max_epochs = max_epochs

    def initialize(self):
        """Check the parameters when the net initializes its callbacks.

        Returns
        -------
        self : TrainUntilConvergence
        """
        check_params(self)
        return super().initialize()

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        # again: set_params on the callback alone does not re-initialize it
        check_params(self)
        self.epochs_ = 0
        self.streak_ = 0
        self.converged_ = False
        self._correct = 0
        self._seen = 0

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self._correct = 0
        self._seen = 0

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if not training:
            return
        y_pred = logits_of(kwargs.get("y_pred"))
        if y_pred is None or batch is None:
            return
        yb = batch[1]
        if not isinstance(yb, torch.Tensor):
            yb = torch.as_tensor(yb)
        pred = y_pred.detach().argmax(1).to(yb.device)
        self._correct += int((pred == yb).sum())
        self._seen += len(yb)

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.epochs_ += 1
        acc = self._correct / self._seen if self._seen else 0.0
        net.history.record("train_acc", acc)
        self.streak_ = self.streak_ + 1 if acc >= self.threshold else 0
        if self.epochs_ >= self.min_epochs and self.streak_ >= self.patience:
            self.converged_ = True
            raise KeyboardInterrupt
        if self.max_epochs is not None and self.epochs_ >= self.max_epochs:
            raise KeyboardInterrupt
