"""Classifiers trained jointly with an auxiliary head: TiDAL and learning loss.

Both nets tap named layers of the backbone with forward hooks during every
forward pass and feed them to an :class:`~skal.nets.AuxiliaryHead`,
registered as a skorch component (``tidal_module_`` or ``lloss_module_``):
it is moved to the device, switched between train and eval mode, optimized
and saved with the net, and ``tidal_module__*`` / ``lloss_module__*``
parameters reach it. The forward pass returns ``(logits, ..., head_output)``:
the logits stay first, so ``predict_proba`` is the classifier's softmax.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from skorch.dataset import get_len
from skorch.utils import is_dataset, to_numpy
from torch import nn
from torch.utils.data import Dataset

from .._utils import logits_of
from ._classifier import NeuralNetClassifier
from .heads import AuxiliaryHead, pairwise_ranking_loss
from .models import ResNet18
from .taps import find_module, last_linear_name

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


def _split_index(x):
    """Return ``(x without the index, index or None)`` for a batch's X."""
    if not isinstance(x, Mapping) or _INDEX_KEY not in x:
        return x, None
    index = x[_INDEX_KEY]
    rest = {k: v for k, v in x.items() if k != _INDEX_KEY}
    if set(rest) == {_X_KEY}:
        rest = rest[_X_KEY]
    return rest, index


def _store_output(store, name):
    def hook(module, inputs, output):
        store[name] = logits_of(output)

    return hook


class _AuxiliaryHeadNet(NeuralNetClassifier):
    """Shared mechanism: hooks, the head component, sample indices.

    Subclasses set ``_head_name`` and implement ``_head_layers``,
    ``_head_hidden``, ``_head_out_features`` and ``_aux_loss``.
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
        modules = dict(self.module_.named_modules())
        tapped = {}
        handles = [
            modules[name].register_forward_hook(_store_output(tapped, name))
            for name in layers
        ]
        try:
            out = super().infer(x, **fit_params)
        finally:
            for handle in handles:
                handle.remove()
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

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Criterion on the logits plus the head's weighted auxiliary loss."""
        logits, head = y_pred[0], y_pred[-1]
        loss = super().get_loss(logits, y_true, X=X, training=training)
        _, index = _split_index(X)
        aux = self._aux_loss(head, logits, y_true, index, training)
        return loss if aux is None else loss + aux

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        """Record the auxiliary loss of a training batch in the history."""
        super().on_batch_end(net, batch=batch, training=training, **kwargs)
        value = getattr(self, "_aux_value_", None)
        if training and value is not None:
            self.history.record_batch(self._aux_history_key, value.item())
            self._aux_value_ = None

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
    skal.strategies.TiDAL : the query strategy using this head.

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
        self._td_rows_ = len(X) if is_dataset(X) else get_len(X)
        self._td_mean_ = None
        self._td_count_ = None
        self._td_pending_ = None

    def _td_update(self, index, logits):
        """Running means after adding this batch, without writing them.

        Returns the unique indices, their new means and counts, and the map
        from batch rows to unique rows (a sampler may repeat a sample).
        """
        proba = torch.softmax(logits.detach().float(), dim=1)
        if self._td_mean_ is None:
            self._td_mean_ = proba.new_zeros((self._td_rows_, proba.shape[1]))
            self._td_count_ = proba.new_zeros(self._td_rows_)
        index = torch.as_tensor(index, device=proba.device).long()
        rows, inverse = torch.unique(index, return_inverse=True)
        seen = proba.new_zeros(len(rows)).index_add_(
            0, inverse, proba.new_ones(len(index))
        )
        total = proba.new_zeros((len(rows), proba.shape[1])).index_add_(
            0, inverse, proba
        )
        count = self._td_count_[rows]
        mean = (self._td_mean_[rows] * count[:, None] + total) / (count + seen)[:, None]
        return rows, mean, count + seen, inverse

    def _aux_loss(self, head, logits, y_true, index, training):
        if not training:
            return None
        if index is None:
            raise RuntimeError(
                "TiDALClassifier needs each training sample's dataset index; "
                "training data must come through get_dataset"
            )
        rows, mean, count, inverse = self._td_update(index, logits)
        self._td_pending_ = (rows, mean, count)
        target = mean[inverse].detach()
        kl = F.kl_div(F.log_softmax(head.float(), dim=1), target, reduction="batchmean")
        self._aux_value_ = kl.detach()
        return self.tidal_lambda * kl

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        """Write the batch's training-pass probabilities into the buffer."""
        super().on_batch_end(net, batch=batch, training=training, **kwargs)
        if not training:
            return
        pending = getattr(self, "_td_pending_", None)
        if pending is None:  # the loss was computed elsewhere: same update
            _, index = _split_index(batch[0])
            pending = self._td_update(index, kwargs["y_pred"][0])[:3]
        rows, mean, count = pending
        self._td_pending_ = None
        self._td_mean_[rows] = mean
        self._td_count_[rows] = count

    def on_train_end(self, net, X=None, y=None, **kwargs):
        """Expose the buffer as ``dynamics_`` (NaN rows: not trained on)."""
        super().on_train_end(net, X=X, y=y, **kwargs)
        if self._td_mean_ is None:
            n_out = self.head_module_.output.out_features
            self.dynamics_ = np.full((self._td_rows_, n_out), np.nan)
            self.dynamics_counts_ = np.zeros(self._td_rows_, dtype=np.int64)
        else:
            counts = to_numpy(self._td_count_).round().astype(np.int64)
            dynamics = to_numpy(self._td_mean_).astype(np.float64)
            dynamics[counts == 0] = np.nan
            self.dynamics_, self.dynamics_counts_ = dynamics, counts
        self._td_mean_ = self._td_count_ = None

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
    skal.strategies.LLoss : queries the largest predicted losses.

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
        if training:
            self._aux_value_ = ranking.detach()
        return self.lloss_lambda * ranking

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
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise ValueError(
            f"{param} must be a sequence of layer names (str), got {layers!r}"
        )
    layers = list(layers)
    if not layers:
        raise ValueError(f"{param} must name at least one layer, got {layers!r}")
    return layers


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
