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

import sys
from collections.abc import Mapping

import numpy as np
import torch
from skorch import NeuralNet
from skorch.dataset import Dataset as SkorchDataset
from skorch.utils import to_tensor
from torch.utils.data import (
    ConcatDataset,
    Dataset,
    Subset,
    TensorDataset,
    default_collate,
)

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


def _torchvision_labels(dataset, indices):
    """Labels of torchvision datasets whose items are known, or None.

    ``DatasetFolder`` (``ImageFolder``), ``MNIST`` (and its subclasses that
    keep its ``__getitem__``) and ``CIFAR10``/``CIFAR100`` return
    ``target_transform(label)`` for an item's stored label. A subclass with
    its own ``__getitem__``, or any other class, may return anything, so its
    labels are read from its items.
    """
    tv = sys.modules.get("torchvision.datasets")
    if tv is None:  # not imported: the dataset cannot be one of its classes
        return None
    getitem = type(dataset).__getitem__
    if getitem is tv.DatasetFolder.__getitem__:
        raw = [dataset.samples[i][1] for i in indices]
    elif getitem is tv.MNIST.__getitem__:
        raw = to_array(dataset.targets)[indices].astype(np.int64).tolist()
    elif getitem is tv.CIFAR10.__getitem__:
        raw = [dataset.targets[i] for i in indices]
    else:
        return None
    if dataset.target_transform is not None:
        raw = [dataset.target_transform(v) for v in raw]
    return np.asarray([_label_value(v) for v in raw])


def _stored_labels(dataset, indices):
    """The labels of items ``indices``, read without their inputs, or None.

    Only where the items are known to carry exactly the stored labels: a
    ``TensorDataset``'s second tensor and the torchvision datasets of
    :func:`_torchvision_labels`, through ``Subset``. Another dataset's
    ``targets`` attribute is not trusted (its ``__getitem__`` may transform
    the labels): its labels are read from its items.
    """
    if isinstance(dataset, TensorDataset):
        if len(dataset.tensors) != 2:
            return None
        return to_array(dataset.tensors[1][torch.as_tensor(indices)])
    if isinstance(dataset, Subset):
        return _stored_labels(dataset.dataset, np.asarray(dataset.indices)[indices])
    return _torchvision_labels(dataset, indices)


def labels_at(dataset, indices) -> np.ndarray:
    """The labels of ``dataset[i]`` for ``i`` in ``indices``, and of no other item.

    The labels are those the items carry. They are read without the inputs
    where the items are known to carry exactly a stored label (a
    ``TensorDataset``'s second tensor; torchvision's ``ImageFolder``,
    ``MNIST`` and ``CIFAR`` classes, ``target_transform`` applied; through
    ``Subset`` and ``ConcatDataset``), else from the items themselves.
    """
    dataset = as_item_dataset(dataset)
    indices = np.asarray(indices, dtype=np.int64)
    stored = _stored_labels(dataset, indices)
    if stored is not None:
        return stored
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


FLOAT_DTYPES = (np.float64, np.float32)
# image-like dtypes kept as stored; the network converts each batch
KEPT_DTYPES = (np.uint8, np.float16)


def array_pool(X, estimator):
    """A pool array as the rows a network reads, or ``X`` itself.

    For a skorch network given a numpy array (a memory-mapped one included)
    of a dtype the learner passes on unconverted, the array's rows as a
    Dataset: every pool taken from it with :func:`take` is then a ``Subset``
    read one batch at a time, not a copy of the rows (``X[rows]`` of a
    memory-mapped pool read all of it into memory). Other estimators (a
    pipeline, a sklearn classifier) and other dtypes get ``X`` itself, which
    they convert as a whole. The simulations and labelling sessions both
    read their pools through it.
    """
    if (
        isinstance(X, np.ndarray)
        and isinstance(estimator, NeuralNet)
        and (X.dtype in FLOAT_DTYPES + KEPT_DTYPES or X.dtype.kind in "iu")
    ):
        return ArrayRows(X)
    return X


class ArrayRows(Dataset):
    """The rows of an array as a Dataset whose items are ``X[i]``.

    A ``Subset`` of it is a pool that is not copied: the simulations score
    each round's pool of an array (a memory-mapped one stays on disk)
    through it, one batch of rows at a time. Items are ``x``, as rows are.
    """

    def __init__(self, X):
        self.X = X

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i]


def rows_of(X):
    """The array rows a ``Subset`` of :class:`ArrayRows` stands for (a copy of
    those rows only), or ``X`` itself."""
    if isinstance(X, Subset) and isinstance(X.dataset, ArrayRows):
        return X.dataset.X[np.asarray(X.indices, dtype=np.int64)]
    return X


def take(X, indices):
    """Rows ``indices`` of ``X``; a ``Subset`` (nothing loaded) for a Dataset."""
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(X, Subset) and isinstance(X.dataset, ArrayRows):
        # one level of Subset over the rows, whatever the nesting
        return Subset(X.dataset, np.asarray(X.indices)[indices].tolist())
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
        # one sample: copying a read-only (memory-mapped) row, or a view with
        # negative strides (``X[..., ::-1]``), which torch cannot wrap, is cheap
        if not x.flags.writeable or any(s < 0 for s in x.strides):
            x = x.copy()
        return torch.from_numpy(x)
    return x


def as_tensor_sample(x):
    """A sample as a tensor of its own dtype (PIL images: uint8, (C, H, W))."""
    x = _numpy_to_tensor(x)
    if not isinstance(x, torch.Tensor) and hasattr(x, "getbands"):  # PIL
        from torchvision.transforms.v2.functional import pil_to_tensor

        x = pil_to_tensor(x)
    elif isinstance(x, bool | int | float):
        x = torch.as_tensor(x)
    return x


def to_module_dtype(x, token_ids=True):
    """A batch (tensor or dict of tensors) in the dtype the module takes.

    Floating tensors become float32 and uint8 tensors float32 with their
    values unchanged (0..255: scaling is a transform's job); other integer
    dtypes are kept when ``token_ids`` (the module embeds token ids), else
    they become float32 too, values unchanged.
    """
    if isinstance(x, dict):
        return {k: to_module_dtype(v, token_ids) for k, v in x.items()}
    if not isinstance(x, torch.Tensor):
        return x
    if x.is_floating_point():
        return x if x.dtype == torch.float32 else x.float()
    if x.dtype == torch.uint8 or not token_ids or x.dtype == torch.bool:
        return x.float()
    return x


def _describe(x):
    if isinstance(x, torch.Tensor):
        dtype = str(x.dtype).removeprefix("torch.")
        return f"a {dtype} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def _transformed(x, transform, name, i):
    """``transform(x)``; an error names the transform, the sample and what it is."""
    try:
        return transform(x)
    except Exception as exc:
        hint = ""
        if isinstance(exc, TypeError) and isinstance(x, torch.Tensor):
            hint = (
                "; skal gives transforms tensors (array rows and PIL images "
                "become tensors of their own dtype first, PIL images uint8 of "
                "shape (C, H, W)): use torchvision.transforms.v2, e.g. "
                "v2.ToDtype(torch.float32, scale=True) in place of ToTensor()"
            )
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(
            f"{name}={transform!r} failed on sample {i} ({_describe(x)}): "
            f"{type(exc).__name__}: {exc}{hint}"
        ) from exc


def _as_sample(x, i, what):
    """A converted sample, or a TypeError naming what it is."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict):
        return {k: as_tensor_sample(v) for k, v in x.items()}
    x = as_tensor_sample(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"sample {i} is {_describe(x)} {what}; a sample must be an array, "
            "a tensor, a number or a PIL image"
        )
    return x


def _convert(x, transform, i):
    """A sample as a tensor of its own dtype, then through ``transform``.

    Array rows and PIL images become tensors before ``transform`` sees them
    (PIL images uint8, (C, H, W)), as they are when no transform is given,
    so that a transform sees the same kind of input for every kind of X.
    """
    if isinstance(x, dict):
        x = {k: as_tensor_sample(v) for k, v in x.items()}
    else:
        x = _as_sample(x, i, "as read")
    if transform is not None:
        x = _transformed(x, transform, "transform", i)
        x = _as_sample(x, i, "after transform")
    return x


class _Batch(list):
    """The samples of one batch, with the dataset indices they were read at."""

    def __init__(self, samples, indices):
        super().__init__(samples)
        self.indices = list(indices)


def _check_item(item, i):
    if isinstance(item, tuple | list) and len(item) not in (1, 2):
        raise ValueError(
            f"item {i} of the Dataset is a {type(item).__name__} of {len(item)} "
            "elements; items must be x or (x, y)"
        )
    return split_item(item)[0]


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
    pool; its batches, read with :meth:`__getitems__`, know their items'
    indices, which :func:`collate_samples` names in its errors.

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
        x = _check_item(self.X[i], i) if self._items else self.X[i]
        yi = 0 if self.y is None else self.y[i]
        return _convert(x, self.transform, i), yi

    def __getitems__(self, indices):
        return _Batch([self[i] for i in indices], indices)


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
            key_x = _transformed(x[self.key], self.transform, "train_transform", i)
            return {**x, self.key: key_x}, y
        return _transformed(x, self.transform, "train_transform", i), y

    def __getitems__(self, indices):
        return _Batch([self[i] for i in indices], indices)


def collate_samples(batch):
    """Stack samples into a batch as ``default_collate`` does, with clear errors.

    Samples of different shapes raise a ValueError naming two of them, and a
    floating batch holding NaN or infinity raises a ValueError naming its
    items (arrays are checked when given; a Dataset's samples here, batch by
    batch: one sum per batch, and a per-value check only when it is not
    finite). Samples are named by their item's index in the dataset when
    the batch knows them (read by :class:`SampleDataset`), else by their
    position in the batch.

    Parameters
    ----------
    batch : list of (x, y)

    Returns
    -------
    batch : list
        ``[x_batch, y_batch]``, as ``default_collate`` returns it.

    Examples
    --------
    >>> import torch
    >>> from skal._data import collate_samples
    >>> xb, yb = collate_samples([(torch.zeros(2), 0), (torch.ones(2), 1)])
    >>> xb.shape, yb.tolist()
    (torch.Size([2, 2]), [0, 1])
    >>> uneven = [(torch.zeros(2), 0), (torch.zeros(3), 1)]
    >>> collate_samples(uneven)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: samples of one batch have different shapes: batch position 0 is (2,) ...
    """
    if isinstance(batch, _Batch):
        names = [f"item {i}" for i in batch.indices]
    else:
        names = [f"batch position {k}" for k in range(len(batch))]
    try:
        out = default_collate(batch)
    except (RuntimeError, TypeError) as exc:
        _raise_shape_mismatch(batch, names, exc)
        raise
    x = out[0] if isinstance(out, tuple | list) else out
    for part in x.values() if isinstance(x, dict) else [x]:
        if isinstance(part, torch.Tensor) and part.is_floating_point():
            _check_finite(part, names)
    return out


def _raise_shape_mismatch(batch, names, exc):
    shapes = [
        tuple(s[0].shape) if isinstance(s[0], torch.Tensor) else None for s in batch
    ]
    for k, shape in enumerate(shapes):
        if shape is not None and shapes[0] is not None and shape != shapes[0]:
            raise ValueError(
                f"samples of one batch have different shapes: {names[0]} is "
                f"{shapes[0]} and {names[k]} is {shape}; the network stacks "
                "samples into batches, so every sample must have the same shape "
                "after transform: give the network a transform that crops or "
                "resizes them (e.g. v2.Resize((height, width)))"
            ) from exc


def _check_finite(x, names):
    total = x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    if torch.isfinite(total) or torch.isfinite(x).all():
        return
    bad = (~torch.isfinite(x.reshape(len(x), -1))).any(1).nonzero().flatten()
    where = ", ".join(names[k] for k in bad.tolist()[:10])
    raise ValueError(
        f"X holds NaN or infinity in {where}{' ...' if len(bad) > 10 else ''} "
        "(as the network reads them, after transform); the samples must be "
        "finite: fix or leave out those items"
    )


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

    ``oracle[indices]`` reads the labels of those items as the items define
    them (see :func:`labels_at`); nothing is read up front, and a label read
    once is kept (the test rows are scored every round).
    It stands for ``y`` in the simulations of :mod:`skal.model_selection`.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self._known = {}

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, indices):
        indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        missing = [i for i in dict.fromkeys(indices.tolist()) if i not in self._known]
        if missing:
            self._known.update(
                zip(missing, labels_at(self.dataset, missing), strict=True)
            )
        return np.asarray([self._known[i] for i in indices.tolist()])


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
