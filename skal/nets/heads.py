"""Auxiliary heads trained jointly with a backbone: TiDAL and learning loss.

TiDAL's training-dynamics prediction module and Yoo & Kweon's loss prediction
module share one shape: the outputs of several layers of the backbone (read
through forward hooks) are each global-average-pooled and sent through
``Linear(channels, hidden)`` and ReLU; the concatenated vectors go through a
final ``Linear``. TiDAL's head has one output per class, the loss
prediction head one output.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch
from torch import nn

from ..validation import Interval, SequenceOf, validate_params

_AT_LEAST_ONE = [Interval(Integral, 1, None, closed="left")]
_HEAD_CONSTRAINTS = {
    "n_inputs": _AT_LEAST_ONE,
    "out_features": _AT_LEAST_ONE,
    "hidden": _AT_LEAST_ONE,
    "in_channels": [SequenceOf(Integral), None],
}


class AuxiliaryHead(nn.Module):
    """Multi-layer tap head: per input GAP, Linear, ReLU; concat; Linear.

    Each input of shape (N, C, H, W) (or any (N, C, ...)) is averaged over
    its spatial dimensions; an input of shape (N, D) is used as is. Layers
    use PyTorch's default initialization.

    Parameters
    ----------
    n_inputs : int
        Number of feature tensors the head receives (tapped layers).
    out_features : int
        Width of the output: the number of classes for TiDAL, 1 for the loss
        prediction head.
    hidden : int, default=128
        Width of each per-input projection.
    in_channels : sequence of int or None, default=None
        Channels of each input. ``None`` infers them from the first batch
        (``torch.nn.LazyLinear``).

    Examples
    --------
    >>> import torch
    >>> from skal.nets import AuxiliaryHead
    >>> head = AuxiliaryHead(2, out_features=10, in_channels=[16, 32])
    >>> feats = [torch.zeros(4, 16, 8, 8), torch.zeros(4, 32)]
    >>> head(feats).shape
    torch.Size([4, 10])
    """

    def __init__(
        self,
        n_inputs: int,
        out_features: int,
        hidden: int = 128,
        in_channels: Sequence[int] | None = None,
    ):
        super().__init__()
        validate_params(
            "AuxiliaryHead",
            {
                "n_inputs": n_inputs,
                "out_features": out_features,
                "hidden": hidden,
                "in_channels": in_channels,
            },
            _HEAD_CONSTRAINTS,
        )
        if in_channels is not None and len(in_channels) != n_inputs:
            raise ValueError(
                f"in_channels has {len(in_channels)} entries, expected n_inputs="
                f"{n_inputs}"
            )
        self.projections = nn.ModuleList(
            nn.LazyLinear(hidden) if in_channels is None else nn.Linear(c, hidden)
            for c in (in_channels or [None] * n_inputs)
        )
        self.relu = nn.ReLU()
        self.output = nn.Linear(n_inputs * hidden, out_features)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.projections):
            raise ValueError(
                f"expected {len(self.projections)} feature tensors, got {len(features)}"
            )
        pooled = [
            self.relu(proj(global_average_pool(f)))
            for proj, f in zip(self.projections, features)
        ]
        return self.output(torch.cat(pooled, dim=1))


def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """Average a (N, C, ...) tensor over all dimensions after C; (N, D) as is.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C, ...) or (N, D)

    Returns
    -------
    pooled : torch.Tensor of shape (N, C) or (N, D)

    Examples
    --------
    >>> import torch
    >>> from skal.nets import global_average_pool
    >>> global_average_pool(torch.ones(2, 3, 4, 4)).shape
    torch.Size([2, 3])
    """
    if x.ndim < 2:
        raise ValueError(
            f"a tapped layer must output (N, D) or (N, C, H, W) tensors, got shape "
            f"{tuple(x.shape)}"
        )
    if x.ndim == 2:
        return x
    flat = x.flatten(2)
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        # torch.mean's own arithmetic here, bit for bit, but the backward
        # hands the tapped map a broadcast view of grad / count where mean's
        # backward writes a full (N, C, H*W) gradient.
        return flat.sum(dim=2) / flat.shape[2]
    return flat.mean(dim=2)


def pairwise_ranking_loss(
    pred_loss: torch.Tensor, true_loss: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """Yoo & Kweon's (2019) loss-prediction loss on a mini-batch.

    The batch is split into pairs (i, B-1-i), the first half against the
    reversed second half, as in the authors' code; with an odd batch size the
    middle sample is left out. For each pair the loss is
    ``max(0, margin - sign(l_i - l_j) * (p_i - p_j))`` with
    ``sign = +1 if l_i > l_j else -1``; the result is the mean over pairs
    (0 when there is no pair). The true losses are detached.

    Parameters
    ----------
    pred_loss : torch.Tensor of shape (B,)
        Predicted losses.
    true_loss : torch.Tensor of shape (B,)
        Per-sample target losses.
    margin : float, default=1.0

    Returns
    -------
    loss : torch.Tensor (scalar)

    Examples
    --------
    >>> import torch
    >>> from skal.nets import pairwise_ranking_loss
    >>> pred = torch.tensor([2.0, 0.0, 0.0, 0.5])
    >>> true = torch.tensor([3.0, 1.0, 2.0, 0.0])
    >>> # pair (0, 3): right order, gap 1.5 > margin -> 0; (1, 2): tie -> 1
    >>> float(pairwise_ranking_loss(pred, true))
    0.5
    """
    pred_loss = pred_loss.reshape(-1)
    true_loss = true_loss.reshape(-1).detach()
    if pred_loss.shape != true_loss.shape:
        raise ValueError(
            f"pred_loss and true_loss must have the same length, got "
            f"{pred_loss.numel()} and {true_loss.numel()}"
        )
    half = pred_loss.numel() // 2
    if half == 0:
        return pred_loss.sum() * 0.0
    pred_diff = (pred_loss - pred_loss.flip(0))[:half]
    true_diff = (true_loss - true_loss.flip(0))[:half]
    sign = torch.where(true_diff > 0, 1.0, -1.0).to(pred_diff.dtype)
    return torch.clamp(margin - sign * pred_diff, min=0).mean()
