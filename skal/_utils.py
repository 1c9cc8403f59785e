"""Small helpers shared across skal: one home for each.

- :func:`logits_of` — skorch's rule for a module's output: the logits, or the
  first element of a tuple or list;
- :func:`eval_mode` — eval mode for a block, each submodule's mode restored;
- :func:`final_step` — the classifier at the end of a pipeline;
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
