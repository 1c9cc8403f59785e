"""Items that are dicts: Hugging Face ``datasets`` and dict-item Datasets.

A Hugging Face ``datasets.Dataset`` is not a ``torch.utils.data.Dataset``
and its items are dicts (``{"image": ..., "label": ...}``), as are the items
of many torch Datasets built for text models. skal reads both the same way:
the input column(s) of each item reach the module, the label column is the
item's label and never reaches ``forward``.

- :class:`DictDataset` names the columns once and is a torch Dataset of
  ``(x, y)`` items; a ``datasets.Dataset`` given anywhere X is taken is read
  through one with the default columns (:func:`as_item_dataset`);
- :func:`split_dict_item` splits a dict item by the default columns (a dict
  item of any other Dataset).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

#: Input columns looked for, in this order, when none is named: a
#: processor's output first (``pixel_values``), then raw images, token ids and
#: raw text.
DEFAULT_INPUT_KEYS = ("pixel_values", "image", "img", "input_ids", "text")
#: Label columns looked for, in this order, when none is named.
DEFAULT_LABEL_KEYS = ("label", "labels")

# formats whose items are dicts of Python, numpy or torch values; the others
# (pandas, arrow, polars, jax, tensorflow) are read through the numpy format
_DICT_FORMATS = (None, "python", "numpy", "torch", "custom")


def is_hf_dataset(X) -> bool:
    """Whether ``X`` is a Hugging Face ``datasets.Dataset`` (map-style).

    ``datasets`` is not imported here: an object of that class exists only
    once the user has imported it.
    """
    datasets = sys.modules.get("datasets")
    cls = getattr(datasets, "Dataset", None)
    return isinstance(cls, type) and isinstance(X, cls)


def _check_hf_container(X):
    """A clear error for the ``datasets`` objects that are not one split."""
    datasets = sys.modules.get("datasets")
    if datasets is None:
        return
    if isinstance(X, getattr(datasets, "DatasetDict", ())):
        raise TypeError(
            f"got a datasets.DatasetDict with splits {sorted(X)}; pass one "
            "split, e.g. dataset['train']"
        )
    iterable = tuple(
        cls
        for cls in (
            getattr(datasets, "IterableDataset", None),
            getattr(datasets, "IterableDatasetDict", None),
        )
        if isinstance(cls, type)
    )
    if iterable and isinstance(X, iterable):
        raise TypeError(
            f"got a {type(X).__name__} (streaming); skal reads items by index: "
            "load the dataset without streaming=True, or take its first rows "
            "with datasets.Dataset.from_generator"
        )


def as_item_dataset(X):
    """``X``, with every ``datasets.Dataset`` in it read through a
    :class:`DictDataset` of the default columns.

    ``Subset`` and ``ConcatDataset`` are rebuilt around the wrapped datasets
    (nothing is read); anything else is returned unchanged.
    """
    _check_hf_container(X)
    if is_hf_dataset(X):
        return DictDataset(X)
    if isinstance(X, Subset):
        inner = as_item_dataset(X.dataset)
        return X if inner is X.dataset else Subset(inner, X.indices)
    if isinstance(X, ConcatDataset):
        parts = [as_item_dataset(d) for d in X.datasets]
        if all(p is d for p, d in zip(parts, X.datasets, strict=True)):
            return X
        return ConcatDataset(parts)
    return X


def _default_label_key(keys):
    return next((k for k in DEFAULT_LABEL_KEYS if k in keys), None)


def _default_input_key(keys, label_key):
    key = next((k for k in DEFAULT_INPUT_KEYS if k in keys), None)
    if key is not None:
        return key
    rest = [k for k in keys if k != label_key]
    if len(rest) == 1:
        return rest[0]
    raise ValueError(
        f"a dict item with keys {sorted(map(str, keys))} has none of the "
        f"default input keys {list(DEFAULT_INPUT_KEYS)}; name its input "
        "column(s) with skal.DictDataset(dataset, input_keys=...)"
    )


def split_dict_item(item, input_keys=None, label_key=None):
    """``(x, y)`` of a dict item; ``y`` is None when it has no label column.

    Parameters
    ----------
    item : Mapping
    input_keys : str, sequence of str or None, default=None
        A str: ``x`` is that column's value. A sequence: ``x`` is a dict of
        those columns (the module's ``forward`` takes them as keyword
        arguments). None: the first of :data:`DEFAULT_INPUT_KEYS` the item
        has, or its only column besides the label.
    label_key : str or None, default=None
        The label column; None: the first of :data:`DEFAULT_LABEL_KEYS` the
        item has.
    """
    if label_key is None:
        label_key = _default_label_key(item)
    if input_keys is None:
        input_keys = _default_input_key(item, label_key)
    names = [input_keys] if isinstance(input_keys, str) else list(input_keys)
    missing = [k for k in names if k not in item]
    if missing:
        raise ValueError(
            f"input_keys={input_keys!r}: the item has no column {missing}; its "
            f"columns are {sorted(map(str, item))}"
        )
    if label_key in names:
        raise ValueError(
            f"the label column {label_key!r} is also an input column "
            f"(input_keys={input_keys!r}); the label must never reach the module"
        )
    if isinstance(input_keys, str):
        x = _value(item[input_keys])
    else:
        x = {k: _value(item[k]) for k in names}
    return x, item.get(label_key) if label_key is not None else None


def _value(v):
    """A column value as the network reads it: lists of numbers become
    arrays; numpy strings become Python strings."""
    if isinstance(v, np.ndarray) and v.dtype.kind in "US":
        return v.tolist()
    if isinstance(v, np.str_ | np.bytes_):
        return v.item()
    if isinstance(v, list) and v and not isinstance(v[0], str | bytes):
        arr = np.asarray(v)
        if arr.dtype.kind in "biuf":
            return arr
    return v


def _channels_first(v):
    """An image value as a ``(C, H, W)`` array or tensor, in every format:
    PIL images (the Python format) and ``(H, W)`` / ``(H, W, C)`` arrays (the
    numpy format drops a channel axis of size 1) take the torch format's
    layout."""
    if hasattr(v, "getbands"):  # PIL
        from torchvision.transforms.v2.functional import pil_to_tensor

        return pil_to_tensor(v)
    if isinstance(v, np.ndarray):
        if v.ndim == 2:
            return v[None]
        if v.ndim == 3:
            return np.ascontiguousarray(v.transpose(2, 0, 1))
    return v


def _image_columns(features):
    """Names of the ``datasets.Image`` columns of a dataset's features."""
    image = sys.modules["datasets"].Image
    return {k for k, f in features.items() if isinstance(f, image)}


class DictDataset(Dataset):
    """A Dataset of dict items, read as ``(x, y)`` with named columns.

    Wraps a Hugging Face ``datasets.Dataset`` (in any format: Python,
    numpy, torch, or with ``set_transform``/``with_transform``) or any
    map-style torch Dataset whose items are dicts. Item ``i`` is
    ``(x, y)``: ``x`` the input column(s), ``y`` the label column's value
    (None if the item has none). The label never reaches the module.

    A ``datasets.Dataset`` passed as X to any learner, network or
    model-selection function is read through a ``DictDataset`` with the
    default columns; wrap it yourself to name other columns. A torch
    Dataset of dict items is read with the default columns as well.

    Image columns of a ``datasets.Dataset`` (``datasets.Image`` features)
    reach ``transform`` in the same layout in every format: ``(C, H, W)``,
    uint8, as the torch format gives them (the numpy format's ``(H, W)`` and
    ``(H, W, C)`` arrays and the Python format's PIL images are converted).
    The outputs of ``set_transform`` are passed as the transform returns
    them.

    Parameters
    ----------
    dataset : datasets.Dataset or torch.utils.data.Dataset
        A map-style dataset whose items are dicts.
    input_keys : str, sequence of str or None, default=None
        The input column, or several: with a str the module's ``forward``
        gets that column's batch as its argument; with a sequence it gets
        one keyword argument per column (``input_ids=..., attention_mask=...``).
        None: the first of ``"pixel_values"``, ``"image"``, ``"img"``,
        ``"input_ids"``, ``"text"`` that the item has, else its only column
        besides the label.
    label_key : str or None, default=None
        The label column; None: ``"label"``, else ``"labels"``. Items
        without it are unlabelled (a pool): give their labels as ``y``.

    Attributes
    ----------
    targets : ndarray of shape (n_samples,) or None
        The label column of a ``datasets.Dataset``, read without decoding
        any image; None for a torch Dataset, for a dataset without the label
        column, and under ``set_transform`` (the transform defines the
        items, so labels are read from them).

    Examples
    --------
    >>> import numpy as np
    >>> from datasets import Dataset
    >>> import skal
    >>> rng = np.random.RandomState(0)
    >>> data = Dataset.from_dict({
    ...     "features": rng.randn(40, 4).astype("float32"),
    ...     "target": np.arange(40) % 2,
    ... })
    >>> ds = skal.DictDataset(data, input_keys="features", label_key="target")
    >>> x, y = ds[3]
    >>> x.shape, int(y)
    ((4,), 1)
    >>> learner = skal.ActiveLearner(
    ...     skal.NeuralNetClassifier(skal.nets.MLP, max_epochs=2), random_state=0
    ... ).fit(ds)                                     # labels from the column
    >>> learner.query(ds, n=3).shape
    (3,)
    """

    def __init__(self, dataset, input_keys=None, label_key=None):
        _check_hf_container(dataset)
        hf = is_hf_dataset(dataset)
        if not hf and not (
            isinstance(dataset, Dataset)
            or (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"))
        ):
            raise TypeError(
                "dataset must be a datasets.Dataset or a map-style torch Dataset "
                f"(with __getitem__ and __len__), got {type(dataset).__name__}"
            )
        if input_keys is not None and not (
            isinstance(input_keys, str)
            or (
                isinstance(input_keys, Sequence)
                and len(input_keys) > 0
                and all(isinstance(k, str) for k in input_keys)
            )
        ):
            raise TypeError(
                "input_keys must be None, a column name or a non-empty sequence "
                f"of column names, got {input_keys!r}"
            )
        if label_key is not None and not isinstance(label_key, str):
            raise TypeError(
                f"label_key must be None or a column name, got {label_key!r}"
            )
        if hf and dataset.format["type"] != "custom":
            names = [input_keys] if isinstance(input_keys, str) else input_keys or []
            unknown = [k for k in [*names, label_key] if k is not None]
            unknown = [k for k in unknown if k not in dataset.column_names]
            if unknown:
                raise ValueError(
                    f"column(s) {unknown} not in the dataset; its columns are "
                    f"{dataset.column_names}"
                )
        self.dataset = dataset
        self.input_keys = input_keys
        self.label_key = label_key
        # a dataset's features change only in a new dataset (cast, map)
        self._images = _image_columns(dataset.features) if hf else set()

    def __len__(self):
        return len(self.dataset)

    def __repr__(self):
        return (
            f"DictDataset({type(self.dataset).__name__} of {len(self)} items, "
            f"input_keys={self.input_keys!r}, label_key={self.label_key!r})"
        )

    def _hf_format(self):
        return self.dataset.format["type"] if is_hf_dataset(self.dataset) else None

    def __getitem__(self, i):
        i = int(i)
        fmt = self._hf_format()
        data = self.dataset
        if fmt not in _DICT_FORMATS:
            data = data.with_format("numpy")
        item = data[i]
        if not isinstance(item, Mapping):
            raise TypeError(
                f"item {i} of the dataset is a {type(item).__name__}, not a dict; "
                "DictDataset reads datasets whose items are dicts"
            )
        if self._images and fmt != "custom":
            item = {
                k: _channels_first(v) if k in self._images else v
                for k, v in item.items()
            }
        return split_dict_item(item, self.input_keys, self.label_key)

    @property
    def targets(self):
        """The label column (see the class docstring), or None."""
        data = self.dataset
        if not is_hf_dataset(data) or data.format["type"] == "custom":
            return None
        key = self.label_key or _default_label_key(data.column_names)
        if key is None or key not in data.column_names:
            return None
        return np.asarray(data.with_format("numpy", columns=[key])[:][key])
