"""Inputs as skal reads them: arrays, tensors and map-style torch Datasets.

One home for what every part of skal needs to know about its inputs:

- :func:`is_torch_dataset` — a user's map-style ``torch.utils.data.Dataset``
  (skorch's own ``Dataset`` excluded: skorch reads that one itself);
- :func:`split_item` — an item ``x`` or ``(x, y)`` as ``(x, y or None)``;
- :func:`labels_at` / :func:`dataset_labels` — the labels of some or all
  items, read from the dataset's label store (``targets``, a
  ``TensorDataset``'s second tensor) when it has one, else item by item;
- :func:`take` — rows of an array, tensor or Dataset (a ``Subset`` for a
  Dataset: nothing is loaded);
- :func:`n_samples` — the number of rows of any of them;
- :class:`SampleDataset` — what the networks iterate: one sample at a time,
  as a tensor of its own dtype, transformed;
- :func:`to_module_dtype` — a batch converted to the dtype the module takes;
- :func:`to_device` — a batch moved to the device, without waiting for the
  copy when it comes from pinned memory.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from skorch.dataset import Dataset as SkorchDataset
from skorch.utils import to_tensor
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from ._items import as_item_dataset, is_hf_dataset, split_dict_item


def is_torch_dataset(X) -> bool:
    """Whether ``X`` is a user's map-style torch Dataset (not skorch's), or a
    Hugging Face ``datasets.Dataset``, which is read as one (see
    :mod:`skal._items`)."""
    return (
        isinstance(X, Dataset) and not isinstance(X, SkorchDataset)
    ) or is_hf_dataset(X)


def split_item(item):
    """``(x, y)`` of a dataset item ``x`` or ``(x, y)``; ``y`` is None for ``x``.

    A tuple or list of length 2 is ``(x, y)``; a 1-tuple (a ``TensorDataset``
    of inputs only) is ``x``; a dict is split by its default input and label
    columns (:func:`skal._items.split_dict_item`); anything else is ``x``.
    """
    if isinstance(item, Mapping):
        return split_dict_item(item)
    if isinstance(item, tuple | list):
        if len(item) == 2:
            return item[0], item[1]
        if len(item) == 1:
            return item[0], None
    return item, None


def _label_value(value):
    if value is None:
        raise ValueError(
            "the dataset's items carry no label (items are x, not (x, y)); pass "
            "the labels as y"
        )
    if hasattr(value, "item"):
        return value.item()
    return value


def _label_store(dataset):
    """All labels of ``dataset`` without reading its items, or None."""
    if isinstance(dataset, TensorDataset):
        return to_array(dataset.tensors[1]) if len(dataset.tensors) == 2 else None
    if isinstance(dataset, Subset):
        parent = _label_store(dataset.dataset)
        return None if parent is None else parent[np.asarray(dataset.indices)]
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return to_array(targets)
    return None


def labels_at(dataset, indices) -> np.ndarray:
    """The labels of ``dataset[i]`` for ``i`` in ``indices``, and of no other item.

    Read from the dataset's label store (``targets``, a ``TensorDataset``'s
    second tensor, through ``Subset``) when it has one, else from the items.
    """
    dataset = as_item_dataset(dataset)
    indices = np.asarray(indices, dtype=np.int64)
    store = _label_store(dataset)
    if store is not None:
        return store[indices]
    if isinstance(dataset, ConcatDataset):
        bounds = np.asarray(dataset.cumulative_sizes)
        part = np.searchsorted(bounds, indices, side="right")
        offsets = np.concatenate([[0], bounds[:-1]])[part]
        out = [
            labels_at(dataset.datasets[p], [i - o])[0]
            for p, i, o in zip(part, indices, offsets, strict=True)
        ]
        return np.asarray(out)
    return np.asarray([_label_value(split_item(dataset[int(i)])[1]) for i in indices])


def dataset_labels(dataset) -> np.ndarray:
    """The labels of every item of ``dataset`` (see :func:`labels_at`)."""
    return labels_at(dataset, np.arange(len(dataset)))


def to_array(values) -> np.ndarray:
    """A numpy view (CPU tensors) or array of ``values``."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def n_samples(X) -> int:
    """Number of rows of an array, tensor, DataFrame, list or Dataset."""
    if hasattr(X, "shape") and len(X.shape) > 0:
        return int(X.shape[0])
    if hasattr(X, "__len__"):
        return len(X)
    return len(np.asarray(X))


def take(X, indices):
    """Rows ``indices`` of ``X``; a ``Subset`` (nothing loaded) for a Dataset."""
    indices = np.asarray(indices, dtype=np.int64)
    if is_torch_dataset(X):
        return Subset(X, indices.tolist())
    if hasattr(X, "iloc"):
        return X.iloc[indices]
    if isinstance(X, list):
        return [X[i] for i in indices]
    return X[indices]


def _numpy_to_tensor(x):
    if isinstance(x, np.ndarray | np.generic):
        x = np.asarray(x)
        # one sample: copying a read-only (memory-mapped) row is cheap
        return torch.from_numpy(x if x.flags.writeable else x.copy())
    return x


def as_tensor_sample(x):
    """A sample as a tensor of its own dtype (PIL images: uint8, (C, H, W))."""
    x = _numpy_to_tensor(x)
    if not isinstance(x, torch.Tensor) and hasattr(x, "getbands"):  # PIL
        from torchvision.transforms.v2.functional import pil_to_tensor

        x = pil_to_tensor(x)
    return x


def to_module_dtype(x):
    """A batch (tensor or dict of tensors) in the dtype the module takes.

    Floating tensors become float32 and uint8 tensors float32 with their
    values unchanged (0..255: scaling is a transform's job); other integer
    dtypes (token ids) are kept.
    """
    if isinstance(x, dict):
        return {k: to_module_dtype(v) for k, v in x.items()}
    if not isinstance(x, torch.Tensor):
        return x
    if x.is_floating_point():
        return x if x.dtype == torch.float32 else x.float()
    if x.dtype == torch.uint8:
        return x.float()
    return x


def _convert(x, transform):
    """Array rows become tensors (dtype kept) before ``transform`` sees them."""
    if isinstance(x, dict):
        x = {k: _numpy_to_tensor(v) for k, v in x.items()}
    else:
        x = _numpy_to_tensor(x)
    if transform is not None:
        x = transform(x)
    if isinstance(x, dict):
        return {k: as_tensor_sample(v) for k, v in x.items()}
    return as_tensor_sample(x)


class SampleDataset(Dataset):
    """Samples of an array, tensor or Dataset, converted one at a time.

    ``dataset[i]`` is ``(x, y)``: ``x`` is row ``i`` of ``X`` (or the input
    of item ``i`` of a Dataset) as a tensor of its own dtype, passed through
    ``transform`` (the network converts whole batches with
    :func:`to_module_dtype` on their way to the module); ``y`` is ``y[i]``
    when ``y`` is given, else 0 (a placeholder skorch ignores at
    inference): an item's own label is never read here, so labels are read
    only where they are asked for.
    A ``DataLoader`` over it holds one batch in memory, never a converted
    pool.

    Parameters
    ----------
    X : ndarray, torch.Tensor or torch Dataset
    y : array-like or None, default=None
    transform : callable or None, default=None
    """

    def __init__(self, X, y=None, transform=None):
        self.X = as_item_dataset(X)
        self.y = None if y is None else to_array(y)
        self.transform = transform
        self._items = is_torch_dataset(X)

    def __len__(self):
        return n_samples(self.X)

    def __getitem__(self, i):
        x = split_item(self.X[i])[0] if self._items else self.X[i]
        yi = 0 if self.y is None else self.y[i]
        return _convert(x, self.transform), yi


class TrainTransformed(Dataset):
    """Apply a per-sample training transform to the inputs of a dataset.

    Items are ``(x, y)``; ``x`` may be a dict, whose ``key`` entry is then
    transformed (the head networks carry each sample's index beside it).
    Each item is transformed on its own, so random transforms draw new
    parameters for every sample.
    """

    def __init__(self, dataset, transform, key=None):
        self.dataset = dataset
        self.transform = transform
        self.key = key

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        if isinstance(x, dict) and self.key in x:
            return {**x, self.key: self.transform(x[self.key])}, y
        return self.transform(x), y


def as_dataset(X):
    """``X`` as a map-style Dataset whose items are its rows."""
    if is_torch_dataset(X):
        return X
    return TensorDataset(torch.as_tensor(to_array(X)))


def concat_rows(a, b):
    """The rows of ``a`` followed by those of ``b``, of the kind of the inputs.

    Arrays give an array (dtype kept when both share it), lists a list,
    DataFrames a DataFrame; when either is a torch Dataset, a
    ``ConcatDataset`` (nothing loaded).
    """
    if is_torch_dataset(a) or is_torch_dataset(b):
        return ConcatDataset([as_dataset(a), as_dataset(b)])
    if isinstance(a, list):
        return a + list(b)
    if hasattr(a, "iloc"):
        import pandas as pd

        return pd.concat([a, b])
    return np.concatenate([to_array(a), to_array(b)])


class DatasetOracle:
    """The labels of a Dataset's items, read only for the indices asked.

    ``oracle[indices]`` reads the labels of those items (see
    :func:`labels_at`); nothing is read up front. It stands for ``y`` in the
    simulations of :mod:`skal.model_selection`.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, indices):
        return labels_at(self.dataset, np.atleast_1d(indices))


def to_device(x, device):
    """A batch (tensor, array or dict of them) as tensors on ``device``.

    A tensor in pinned memory (a ``DataLoader`` with ``pin_memory=True``) is
    copied with ``non_blocking=True``: the host goes on to the next batch
    while the copy and the work queued after it run on the device. Other
    inputs are converted and copied as skorch does.
    """
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=x.device.type == "cpu" and x.is_pinned())
    return to_tensor(x, device=device)
