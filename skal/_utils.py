"""Small helpers shared across skal: one home for each.

- :func:`logits_of` — skorch's rule for a module's output: the logits, or the
  first element of a tuple or list;
- :func:`eval_mode` — eval mode for a block, each submodule's mode restored;
- :func:`final_step` — the classifier at the end of a pipeline;
- :func:`argmax_labels` — the predicted class of each row (pseudo-labels);
- :func:`encode_labels` — labels as indices into a list of classes;
- :func:`torch_seed`, :func:`draw_seed` — seeded torch generators that leave
  the global state untouched.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from torch import nn


@contextmanager
def torch_seed(seed: int):
    """Run a block with torch's global generators seeded, then restore them.

    Parameters
    ----------
    seed : int
        Seed for the CPU generator and every CUDA device's generator.

    Examples
    --------
    >>> import torch
    >>> from skal._utils import torch_seed
    >>> with torch_seed(0):
    ...     a = torch.rand(2)
    >>> with torch_seed(0):
    ...     b = torch.rand(2)
    >>> bool((a == b).all())
    True
    """
    devices = (
        list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def draw_seed(random_state: np.random.RandomState) -> int:
    """A 31-bit seed drawn from a numpy random state."""
    return int(random_state.randint(np.iinfo(np.int32).max))


def logits_of(output):
    """The logits in a module's output (skorch's convention).

    A module's ``forward`` returns the logits, or a tuple or list whose first
    element is the logits (the rest being auxiliary outputs).

    Examples
    --------
    >>> import torch
    >>> from skal._utils import logits_of
    >>> z = torch.zeros(2, 3)
    >>> logits_of(z) is z, logits_of((z, "aux")) is z, logits_of([z]) is z
    (True, True, True)
    """
    if isinstance(output, tuple | list):
        return output[0]
    return output


@contextmanager
def eval_mode(module: nn.Module):
    """Put a module in eval mode; restore every submodule's mode afterwards.

    Examples
    --------
    >>> from torch import nn
    >>> from skal._utils import eval_mode
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training
    True
    """
    states = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in states:
            m.training = training


def final_step(estimator):
    """The last step of a pipeline, or the estimator itself.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skal._utils import final_step
    >>> final_step(make_pipeline(StandardScaler(), LogisticRegression()))
    LogisticRegression()
    """
    if isinstance(estimator, Pipeline):
        return estimator[-1]
    return estimator


def argmax_labels(scores):
    """The predicted class of each row: the index of its largest score.

    The one rule for pseudo-labels and predicted labels computed from logits
    or probabilities (dynamicAL's pseudo-labels, BADGE's and TiDAL's
    ``y_hat``); ties go to the lowest index.

    Parameters
    ----------
    scores : torch.Tensor or ndarray of shape (n_samples, n_classes)
        Logits or probabilities.

    Returns
    -------
    labels : torch.Tensor or ndarray of shape (n_samples,)
        Class indices, of the same kind as ``scores``.

    Examples
    --------
    >>> import torch
    >>> from skal._utils import argmax_labels
    >>> argmax_labels(torch.tensor([[0.1, 2.0, 0.3], [1.0, 1.0, 0.0]]))
    tensor([1, 0])
    """
    return scores.argmax(1)


def encode_labels(y, classes, *, name="y", owner="the", hint=None) -> np.ndarray:
    """Indices of the labels ``y`` in ``classes`` (int64).

    Parameters
    ----------
    y : array-like or torch.Tensor of shape (n_samples,)
        Labels; each must be one of ``classes``.
    classes : array-like of shape (n_classes,)
        Distinct labels, in any order; label ``classes[i]`` is encoded as
        ``i``.
    name : str, default="y"
        How the error message calls ``y``.
    owner : str, default="the"
        Whose classes they are, in the error message ("the learner's").
    hint : str or None, default=None
        A remedy appended to the error message.

    Returns
    -------
    indices : ndarray of shape (n_samples,) and dtype int64

    Raises
    ------
    ValueError
        If ``y`` holds labels that are not among ``classes``, ``None``, NaN
        and labels of another type included; the message names them.

    Examples
    --------
    >>> from skal._utils import encode_labels
    >>> encode_labels(["b", "a", "b"], ["b", "a"])
    array([0, 1, 0])
    >>> encode_labels([0, None], [0, 1], owner="the learner's")
    Traceback (most recent call last):
    ...
    ValueError: y contains labels [None] that are not among the learner's classes [0, 1]
    """
    classes = np.asarray(classes)
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y).ravel()
    sorter = np.argsort(classes, kind="stable")
    try:
        pos = np.searchsorted(classes, y, sorter=sorter)
    except TypeError:
        # labels that do not compare with the classes (None among integers,
        # say): look each one up instead of sorting
        lookup = {}
        for i, label in enumerate(classes.tolist()):
            lookup.setdefault(label, i)
        idx = np.array([lookup.get(label, -1) for label in y.tolist()], np.int64)
        unknown = idx < 0
    else:
        idx = sorter[np.clip(pos, 0, len(classes) - 1)]
        unknown = classes[idx] != y
    if np.any(unknown):
        try:
            bad = np.unique(y[unknown]).tolist()
        except TypeError:  # unsortable mix: order of appearance
            bad = list(dict.fromkeys(y[unknown].tolist()))
        message = (
            f"{name} contains labels {bad[:10]} that are not among {owner} "
            f"classes {classes.tolist()}"
        )
        raise ValueError(message if hint is None else f"{message}; {hint}")
    return idx.astype(np.int64)
