"""Classifiers trained jointly with an auxiliary head: TiDAL and learning loss.

Both nets tap named layers of the backbone (a :class:`~skal.nets.LayerTap`)
during every forward pass and feed them to an :class:`~skal.nets.AuxiliaryHead`,
registered as a skorch component (``tidal_module_`` or ``lloss_module_``):
it is moved to the device, switched between train and eval mode, optimized
and saved with the net, and ``tidal_module__*`` / ``lloss_module__*``
parameters reach it. The forward pass returns ``(logits, ..., head_output)``:
the logits stay first, so ``predict_proba`` is the classifier's softmax.

What a training step computes besides the loss (the head's loss for the
history, TiDAL's update of its buffer) travels in skorch's step dict:
``train_step_single`` returns it and skorch passes the dict on to
``on_batch_end``.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from skorch.dataset import get_len, unpack_data
from skorch.utils import is_dataset, to_numpy
from torch import nn
from torch.utils.data import Dataset

from .._data import _Batch
from ..validation import Interval, SequenceOf, check_params
from ._classifier import NeuralNetClassifier
from .heads import AuxiliaryHead, global_average_pool, pairwise_ranking_loss
from .models import ResNet18
from .taps import LayerTap, find_module, last_linear_name

_X_KEY = "__skal_x__"
_INDEX_KEY = "__skal_index__"
_RESNET18_STAGES = ("layer1", "layer2", "layer3", "layer4")


class IndexedDataset(Dataset):
    """Wrap a dataset so that each sample carries its dataset index.

    ``dataset[i]`` must return ``(Xi, yi)``; the wrapper returns
    ``({"__skal_x__": Xi, "__skal_index__": i}, yi)`` (or adds the index
    key to ``Xi`` when ``Xi`` is a dict). Subsets taken by skorch's
    ``train_split`` and samplers keep the original indices.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        Xi, yi = self.dataset[i]
        if isinstance(Xi, Mapping):
            return {**Xi, _INDEX_KEY: i}, yi
        return {_X_KEY: Xi, _INDEX_KEY: i}, yi

    def __getitems__(self, indices):
        # a batch that knows its items, which collate_samples names in errors
        return _Batch([self[i] for i in indices], indices)


def _split_index(x):
    """Return ``(x without the index, index or None)`` for a batch's X."""
    if not isinstance(x, Mapping) or _INDEX_KEY not in x:
        return x, None
    index = x[_INDEX_KEY]
    rest = {k: v for k, v in x.items() if k != _INDEX_KEY}
    if set(rest) == {_X_KEY}:
        rest = rest[_X_KEY]
    return rest, index


class DynamicsUpdate(NamedTuple):
    """One batch's update of a :class:`TrainingDynamicsBuffer`, not yet written.

    Attributes
    ----------
    rows : torch.Tensor of shape (n_unique,)
        The distinct dataset rows of the batch.
    mean : torch.Tensor of shape (n_unique, n_classes)
        Their running means with this batch's passes included.
    count : torch.Tensor of shape (n_unique,)
        Their numbers of passes with this batch's included.
    inverse : torch.Tensor of shape (batch_size,) or None
        For each batch row, its position in ``rows``; None when every row of
        the batch is distinct and ``rows`` is the batch's index itself.
    """

    rows: torch.Tensor
    mean: torch.Tensor
    count: torch.Tensor
    inverse: torch.Tensor | None

    @property
    def targets(self) -> torch.Tensor:
        """The updated running mean of each batch row, shape (batch_size, C)."""
        return self.mean if self.inverse is None else self.mean[self.inverse]


class TrainingDynamicsBuffer:
    """Running mean of each training sample's softmax over its training passes.

    TiDAL's target (Kye et al., ICCV 2023): one row per dataset row, updated
    with ``p_bar <- (p_bar * n + p) / (n + 1)`` for each training pass ``p``
    of the row (``n`` its passes so far). A batch may hold a row several
    times (a sampler drawing with replacement); all its passes count. The
    update is computed first (:meth:`update`: the loss of the batch needs
    the new means) and written afterwards (:meth:`commit`). Rows that are
    never updated (validation rows) keep a count of 0.

    Parameters
    ----------
    n_rows : int
        Number of dataset rows.

    Attributes
    ----------
    mean : torch.Tensor of shape (n_rows, n_classes) or None
        The running means; None until the first update (the number of
        classes is known from the first logits).
    count : torch.Tensor of shape (n_rows,) or None
        How many passes each mean holds.

    Examples
    --------
    >>> import torch
    >>> from skal.nets._headnets import TrainingDynamicsBuffer
    >>> buffer = TrainingDynamicsBuffer(3)
    >>> logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    >>> buffer.commit(buffer.update(torch.tensor([2, 2]), logits))
    >>> dynamics, counts = buffer.result(n_classes=2)
    >>> counts.tolist(), dynamics[2].round(3).tolist()
    ([0, 0, 2], [0.7, 0.3])
    """

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self.mean = None
        self.count = None

    def update(self, index, logits) -> DynamicsUpdate:
        """The running means after adding one batch's passes, not written.

        Parameters
        ----------
        index : array-like or torch.Tensor of shape (batch_size,)
            The dataset row of each sample of the batch.
        logits : torch.Tensor of shape (batch_size, n_classes)
            The batch's logits in the training pass (detached here).

        Returns
        -------
        update : DynamicsUpdate
        """
        proba = torch.softmax(logits.detach().float(), dim=1)
        if self.mean is None:
            self.mean = proba.new_zeros((self.n_rows, proba.shape[1]))
            self.count = proba.new_zeros(self.n_rows)
        index = torch.as_tensor(index, dtype=torch.long)
        # decided where the index is (the host, for a DataLoader's batch)
        # before it moves: on a GPU, torch.unique would make the host wait
        distinct = len(torch.unique(index)) == len(index)
        index = index.to(proba.device)
        if distinct:
            # Every row once (the batches of an epoch): the same arithmetic
            # row by row, in the batch's order, without the regrouping.
            count = self.count[index]
            count_new = count + 1
            mean = (self.mean[index] * count[:, None] + proba) / count_new[:, None]
            return DynamicsUpdate(index, mean, count_new, None)
        rows, inverse, seen = torch.unique(
            index, return_inverse=True, return_counts=True
        )
        total = proba.new_zeros((len(rows), proba.shape[1])).index_add_(
            0, inverse, proba
        )
        count = self.count[rows]
        count_new = count + seen.to(count.dtype)
        mean = (self.mean[rows] * count[:, None] + total) / count_new[:, None]
        return DynamicsUpdate(rows, mean, count_new, inverse)

    def commit(self, update: DynamicsUpdate) -> None:
        """Write an update computed by :meth:`update`.

        Parameters
        ----------
        update : DynamicsUpdate
        """
        self.mean.index_copy_(0, update.rows, update.mean)
        self.count.index_copy_(0, update.rows, update.count)

    def result(self, n_classes: int):
        """The means as float64 (NaN for rows never updated) and the counts.

        Parameters
        ----------
        n_classes : int
            Width of the means when nothing was ever updated.

        Returns
        -------
        dynamics : ndarray of shape (n_rows, n_classes)
        counts : ndarray of shape (n_rows,) and dtype int64
        """
        if self.mean is None:
            return (
                np.full((self.n_rows, n_classes), np.nan),
                np.zeros(self.n_rows, dtype=np.int64),
            )
        counts = to_numpy(self.count).round().astype(np.int64)
        dynamics = to_numpy(self.mean).astype(np.float64)
        dynamics[counts == 0] = np.nan
        return dynamics, counts


class _AuxiliaryHeadNet(NeuralNetClassifier):
    """Shared mechanism: layer taps, the head component, sample indices.

    Subclasses set ``_head_name`` and ``_aux_history_key`` and implement
    ``_head_layers``, ``_head_hidden``, ``_head_out_features`` and
    ``_aux_loss``, which returns the head's weighted loss (or None) and the
    entries the training step adds to skorch's step dict.
    """

    _sample_key = _X_KEY
    _head_name = ""
    _aux_history_key = ""

    # ----------------------------------------------------------- the head
    def _head_layers(self) -> list[str]:
        raise NotImplementedError

    def _head_hidden(self) -> int:
        raise NotImplementedError

    def _head_out_features(self) -> int:
        raise NotImplementedError

    def _head_inputs(self, features):
        return features

    def _aux_loss(self, head, logits, y_true, index, training):
        raise NotImplementedError

    @property
    def head_module_(self) -> nn.Module:
        """The fitted auxiliary head (the ``<name>_module_`` component)."""
        return getattr(self, f"{self._head_name}_module_")

    def initialize_module(self):
        """Build the backbone, then the auxiliary head on its tapped layers."""
        # here too: skorch's set_params rebuilds the module without initialize
        check_params(self)
        super().initialize_module()
        layers = self._head_layers()
        for name in layers:
            find_module(self.module_, name)
        kwargs = self.get_params_for(f"{self._head_name}_module")
        kwargs.setdefault("n_inputs", len(layers))
        kwargs.setdefault("hidden", self._head_hidden())
        if "out_features" not in kwargs:
            kwargs["out_features"] = self._head_out_features()
        setattr(self, f"{self._head_name}_module_", AuxiliaryHead(**kwargs))
        return self

    def get_dataset(self, X, y=None):
        """The dataset of skal's net, each sample carrying its dataset index."""
        if isinstance(X, IndexedDataset):
            return X
        return IndexedDataset(super().get_dataset(X, y))

    def infer(self, x, **fit_params):
        """Run the backbone with its layers tapped, then the head.

        Returns
        -------
        outputs : tuple of torch.Tensor
            The module's output(s), logits first, then the head's output.
        """
        x, _ = _split_index(x)
        layers = self._head_layers()
        # not detached: the head's loss reaches the backbone. The head's first
        # step, global average pooling, runs in the hook, so that the tapped
        # maps are freed as soon as the backbone is done with them.
        with LayerTap(
            self.module_, layers, detach=False, transform=global_average_pool
        ) as tap:
            out = super().infer(x, **fit_params)
        tapped = tap.features
        missing = [name for name in layers if name not in tapped]
        if missing:
            raise RuntimeError(
                f"layers {missing} did not run in the forward pass of "
                f"{type(self.module_).__name__}; tap layers that the forward uses"
            )
        features = self._head_inputs([tapped[name] for name in layers])
        head = self.head_module_(features)
        outputs = tuple(out) if isinstance(out, tuple | list) else (out,)
        return (*outputs, head)

    def _loss_terms(self, y_pred, y_true, X, training):
        """The total loss and the head's entries for the step dict."""
        logits, head = y_pred[0], y_pred[-1]
        loss = super().get_loss(logits, y_true, X=X, training=training)
        _, index = _split_index(X)
        aux, step = self._aux_loss(head, logits, y_true, index, training)
        return (loss if aux is None else loss + aux), step

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Criterion on the logits plus the head's weighted auxiliary loss."""
        return self._loss_terms(y_pred, y_true, X, training)[0]

    def train_step_single(self, batch, **fit_params):
        """skorch's training step; the step dict also carries the head's values.

        Returns
        -------
        step : dict
            ``loss`` and ``y_pred`` as in skorch, plus the detached auxiliary
            loss under the name it has in the history (and, for TiDAL, the
            buffer update); skorch passes them on to ``on_batch_end``.
        """
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss, step = self._loss_terms(y_pred, yi, X=Xi, training=True)
        loss.backward()
        return {"loss": loss, "y_pred": y_pred, **step}

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        """Record the auxiliary loss of a training batch in the history."""
        super().on_batch_end(net, batch=batch, training=training, **kwargs)
        value = kwargs.get(self._aux_history_key)
        if training and value is not None:
            self.history.record_batch(self._aux_history_key, value.item())

    def iter_head_outputs(self, X, device=None):
        """Yield ``(logits, head_output)`` per evaluation batch, without grad.

        Parameters
        ----------
        X : array-like, tensor or Dataset
        device : str or torch.device or None, default=None
            Where the tensors are yielded; ``None`` keeps them on the net's
            device.

        Yields
        ------
        logits : torch.Tensor of shape (batch_size, n_classes)
        head : torch.Tensor of shape (batch_size, head_outputs)
        """
        self.check_is_fitted()
        device = self.device if device is None else device
        for out in self.forward_iter(X, training=False, device=device):
            yield out[0], out[-1]

    def _head_output(self, X) -> np.ndarray:
        parts = [head for _, head in self.iter_head_outputs(X, device="cpu")]
        return to_numpy(torch.cat(parts)) if parts else np.empty((0, 0))


class TiDALClassifier(_AuxiliaryHeadNet):
    """A network trained with TiDAL's training-dynamics prediction head.

    The head (Kye et al., ICCV 2023) taps ``tidal_layers`` of the module:
    per layer global average pooling, ``Linear(channels, tidal_hidden)`` and
    ReLU; concatenated; ``Linear(., n_classes)``. Its features are not
    detached, so its loss trains the backbone too.

    During each ``fit`` / ``partial_fit`` an N x C buffer, indexed by the
    dataset index of the training samples, holds the running mean of each
    sample's softmax over its training passes (the same forward pass as the
    classification loss, train mode): ``p_bar <- (p_bar * n + p) / (n + 1)``
    with ``n`` the sample's passes so far, i.e. the mean over the epochs of
    the current fit when every sample is seen once per epoch (shuffled or
    not); with a sampler that repeats or skips samples it stays the mean of
    the passes that happened. The buffer is reset when training starts
    (``on_train_begin``), as in the official code, so warm-started rounds of
    an :class:`~skal.ActiveLearner` track the current fit only. Rows that
    skorch's ``train_split`` holds out for validation are never updated.

    The loss is ``CE + tidal_lambda * KL(p_bar || softmax(head))`` with
    batch-mean reduction and the target detached, from the first epoch; each
    training batch's KL term is recorded in the history as ``"tidal_kl"``.
    The validation loss is the criterion alone (validation rows have no
    training dynamics).

    Parameters
    ----------
    module : torch.nn.Module class or instance
        The backbone; its forward returns logits (or a tuple, logits first).
    *args
        Further positional arguments of skorch's ``NeuralNetClassifier``.
    tidal_layers : sequence of str or None, default=None
        Dotted names of the layers to tap (outputs of shape (N, C, H, W) or
        (N, D); a layer called several times in one forward pass gives its
        last output). ``None`` means the four stages ``layer1`` .. ``layer4``
        of :class:`skal.nets.ResNet18` and is only valid for that module.
    tidal_hidden : int, default=128
        Width of each per-layer projection.
    tidal_lambda : float, default=1.0
        Weight of the KL term.
    **kwargs
        Any :class:`skal.NeuralNetClassifier` argument; ``tidal_module__*``
        arguments go to :class:`~skal.nets.AuxiliaryHead`.

    Attributes
    ----------
    tidal_module_ : AuxiliaryHead
        The training-dynamics prediction head.
    dynamics_ : ndarray of shape (n_samples, n_classes)
        After training: the buffer, one row per sample of the last ``fit`` /
        ``partial_fit`` call's X (dataset order); NaN for rows that were not
        trained on (validation rows).
    dynamics_counts_ : ndarray of shape (n_samples,)
        How many training passes each row of ``dynamics_`` averages.

    See Also
    --------
    skal.strategies.TiDAL : The query strategy using this head.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(40, 1, 16, 16)
    >>> y = rng.randint(3, size=40)
    >>> net = skal.TiDALClassifier(
    ...     skal.nets.SmallCNN,
    ...     tidal_layers=["features.1", "features.5"],
    ...     classes=[0, 1, 2],
    ...     max_epochs=2,
    ... ).fit(X, y)
    >>> net.predict_dynamics(X).shape
    (40, 3)
    >>> bool(np.allclose(net.dynamics_.sum(axis=1), 1.0))
    True
    """

    _head_name = "tidal"
    _aux_history_key = "tidal_kl"
    _parameter_constraints: dict = {
        **NeuralNetClassifier._parameter_constraints,
        "tidal_layers": [SequenceOf(str), None],
        "tidal_hidden": [Interval(Integral, 1, None, closed="left")],
        "tidal_lambda": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        module,
        *args,
        tidal_layers=None,
        tidal_hidden=128,
        tidal_lambda=1.0,
        **kwargs,
    ):
        super().__init__(module, *args, **kwargs)
        self.tidal_layers = tidal_layers
        self.tidal_hidden = tidal_hidden
        self.tidal_lambda = tidal_lambda

    def _head_layers(self):
        return _resolve_layers(self.tidal_layers, self.module, "tidal_layers")

    def _head_hidden(self):
        return self.tidal_hidden

    def _head_out_features(self):
        return _n_outputs(self, "tidal_module__out_features")

    # ------------------------------------------------ training dynamics
    def on_train_begin(self, net, X=None, y=None, **kwargs):
        """Reset the training-dynamics buffer for this fit."""
        super().on_train_begin(net, X=X, y=y, **kwargs)
        n_rows = len(X) if is_dataset(X) else get_len(X)
        self._td_buffer_ = TrainingDynamicsBuffer(n_rows)

    def _aux_loss(self, head, logits, y_true, index, training):
        if not training:
            return None, {}
        if index is None:
            raise RuntimeError(
                "TiDALClassifier needs each training sample's dataset index; "
                "training data must come through get_dataset"
            )
        update = self._td_buffer_.update(index, logits)
        target = update.targets.detach()
        kl = F.kl_div(F.log_softmax(head.float(), dim=1), target, reduction="batchmean")
        step = {self._aux_history_key: kl.detach(), "dynamics_update": update}
        return self.tidal_lambda * kl, step

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        """Write the batch's training-pass probabilities into the buffer."""
        super().on_batch_end(net, batch=batch, training=training, **kwargs)
        if not training:
            return
        update = kwargs.get("dynamics_update")
        if update is None:  # the loss was computed elsewhere: same update
            _, index = _split_index(batch[0])
            update = self._td_buffer_.update(index, kwargs["y_pred"][0])
        self._td_buffer_.commit(update)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        """Expose the buffer as ``dynamics_`` (NaN rows: not trained on)."""
        super().on_train_end(net, X=X, y=y, **kwargs)
        n_out = self.head_module_.output.out_features
        self.dynamics_, self.dynamics_counts_ = self._td_buffer_.result(n_out)
        self._td_buffer_ = None

    def predict_dynamics(self, X) -> np.ndarray:
        """The head's predicted training dynamics: softmax of its output.

        Parameters
        ----------
        X : array-like, tensor or Dataset

        Returns
        -------
        dynamics : ndarray of shape (n_samples, n_classes)
        """
        head = self._head_output(X)
        return to_numpy(torch.softmax(torch.as_tensor(head), dim=1))


class LLossClassifier(_AuxiliaryHeadNet):
    """A network trained with a loss prediction head (Yoo & Kweon, CVPR 2019).

    The head has TiDAL's shape (per tapped layer GAP, ``Linear(channels,
    lloss_hidden)``, ReLU; concatenated; ``Linear(., 1)``) and predicts each
    sample's loss. It is trained with the pairwise ranking loss
    :func:`~skal.nets.pairwise_ranking_loss` against the per-sample
    cross-entropy of the same forward pass (pairs formed inside each
    mini-batch): ``loss = criterion + lloss_lambda * ranking``. The tapped
    features are detached from epoch ``lloss_detach_epoch`` (0-based, counted
    from the start of each ``fit`` / ``partial_fit``) on, so that afterwards
    the head no longer trains the backbone; the paper detaches after 120 of
    200 epochs. Each training batch's ranking loss is recorded in the
    history as ``"lloss_ranking"``.

    Parameters
    ----------
    module : torch.nn.Module class or instance
        The backbone; its forward returns logits (or a tuple, logits first).
    *args
        Further positional arguments of skorch's ``NeuralNetClassifier``.
    lloss_layers : sequence of str or None, default=None
        Layers to tap; ``None`` means ``layer1`` .. ``layer4`` of
        :class:`skal.nets.ResNet18` and is only valid for that module.
    lloss_hidden : int, default=128
    lloss_lambda : float, default=1.0
        Weight of the ranking loss.
    lloss_margin : float, default=1.0
        Margin of the ranking loss.
    lloss_detach_epoch : int or None, default=120
        First epoch of each fit whose head features are detached; ``None``
        never detaches.
    **kwargs
        Any :class:`skal.NeuralNetClassifier` argument; ``lloss_module__*``
        arguments go to :class:`~skal.nets.AuxiliaryHead`.

    Attributes
    ----------
    lloss_module_ : AuxiliaryHead
        The loss prediction head.

    See Also
    --------
    skal.strategies.LLoss : Queries the largest predicted losses.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(40, 1, 16, 16)
    >>> y = rng.randint(3, size=40)
    >>> net = skal.LLossClassifier(
    ...     skal.nets.SmallCNN,
    ...     lloss_layers=["features.1", "features.5"],
    ...     classes=[0, 1, 2],
    ...     max_epochs=2,
    ... ).fit(X, y)
    >>> net.predict_loss(X).shape
    (40,)
    """

    _head_name = "lloss"
    _aux_history_key = "lloss_ranking"
    _parameter_constraints: dict = {
        **NeuralNetClassifier._parameter_constraints,
        "lloss_layers": [SequenceOf(str), None],
        "lloss_hidden": [Interval(Integral, 1, None, closed="left")],
        "lloss_lambda": [Interval(Real, 0, None, closed="left")],
        "lloss_margin": [Interval(Real, 0, None, closed="left")],
        "lloss_detach_epoch": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(
        self,
        module,
        *args,
        lloss_layers=None,
        lloss_hidden=128,
        lloss_lambda=1.0,
        lloss_margin=1.0,
        lloss_detach_epoch=120,
        **kwargs,
    ):
        super().__init__(module, *args, **kwargs)
        self.lloss_layers = lloss_layers
        self.lloss_hidden = lloss_hidden
        self.lloss_lambda = lloss_lambda
        self.lloss_margin = lloss_margin
        self.lloss_detach_epoch = lloss_detach_epoch

    def _head_layers(self):
        return _resolve_layers(self.lloss_layers, self.module, "lloss_layers")

    def _head_hidden(self):
        return self.lloss_hidden

    def _head_out_features(self):
        return 1

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        """Start counting this fit's epochs (for ``lloss_detach_epoch``)."""
        super().on_train_begin(net, X=X, y=y, **kwargs)
        self._epochs_in_fit_ = 0

    def on_epoch_end(self, net, **kwargs):
        super().on_epoch_end(net, **kwargs)
        self._epochs_in_fit_ = getattr(self, "_epochs_in_fit_", 0) + 1

    def _head_inputs(self, features):
        epoch = getattr(self, "_epochs_in_fit_", 0)
        if self.lloss_detach_epoch is not None and epoch >= self.lloss_detach_epoch:
            return [f.detach() for f in features]
        return features

    def _aux_loss(self, head, logits, y_true, index, training):
        y_true = torch.as_tensor(y_true, device=logits.device).long()
        true_loss = F.cross_entropy(logits, y_true, reduction="none")
        ranking = pairwise_ranking_loss(head.reshape(-1), true_loss, self.lloss_margin)
        step = {self._aux_history_key: ranking.detach()} if training else {}
        return self.lloss_lambda * ranking, step

    def predict_loss(self, X) -> np.ndarray:
        """The head's predicted loss for each sample.

        Parameters
        ----------
        X : array-like, tensor or Dataset

        Returns
        -------
        loss : ndarray of shape (n_samples,)
        """
        return self._head_output(X).reshape(-1)


def _resolve_layers(layers, module, param):
    if layers is None:
        is_resnet = (
            isinstance(module, ResNet18)
            if isinstance(module, nn.Module)
            else isinstance(module, type) and issubclass(module, ResNet18)
        )
        if is_resnet:
            return list(_RESNET18_STAGES)
        name = getattr(module, "__name__", type(module).__name__)
        raise ValueError(
            f"{param}=None is only valid for skal.nets.ResNet18; name the "
            f"layers of {name} to tap, e.g. {param}=['layer1', 'layer2', "
            "'layer3', 'layer4'] for torchvision's resnet18"
        )
    # the list itself was checked against the declared constraints
    return list(layers)


def _n_outputs(net, param):
    if net.classes is not None:
        return len(net.classes)
    try:
        return find_module(net.module_, last_linear_name(net.module_)).out_features
    except ValueError:
        raise ValueError(
            f"cannot tell how many classes {type(net.module_).__name__} predicts; "
            f"pass classes=... or {param}=..."
        ) from None
