"""Small helpers shared across skal."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch


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
    >>> from skal.utils import torch_seed
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
