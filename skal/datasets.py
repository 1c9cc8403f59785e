"""Datasets for active-learning experiments: Fashion-MNIST, digits, long tails.

Nothing is downloaded: Fashion-MNIST is read from local IDX files (the Debian
package ``dataset-fashion-mnist``, a torchvision root, or any directory), and
the 8×8 digits ship with scikit-learn.
"""

from __future__ import annotations

import gzip
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import check_random_state

from .validation import Interval, Options, validate_arguments

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_PATH = [str, os.PathLike]
_RATIO = [Interval(Real, 1, None, closed="left")]


@validate_arguments({"path": _PATH})
def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed).

    Parameters
    ----------
    path : path-like
        An IDX file; a name ending in ``.gz`` is decompressed.

    Returns
    -------
    array : ndarray
        With the file's shape and element type.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path} holds {len(data)} bytes but its header {shape} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _candidate_dirs(path):
    if path is None:
        roots = [DEBIAN_FASHION_MNIST]
        if os.environ.get("SKAL_DATA"):
            roots.insert(0, Path(os.environ["SKAL_DATA"]))
    else:
        roots = [Path(path)]
    dirs = []
    for root in roots:
        dirs += [root, root / "FashionMNIST" / "raw", root / "raw"]
    return dirs


def _find(directory: Path, name: str):
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


@validate_arguments(
    {
        "path": [*_PATH, None],
        "subset": [Options({"train", "test", "all"})],
        "dtype": [Options({"float32", "uint8"})],
    }
)
def load_fashion_mnist(path=None, *, subset="train", dtype="float32"):
    """Load Fashion-MNIST from local IDX files as 1×28×28 images.

    Parameters
    ----------
    path : path-like or None, default=None
        A directory holding the four IDX files (plain or ``.gz``), or a
        torchvision root (files under ``FashionMNIST/raw``). If None, the
        directory in the ``SKAL_DATA`` environment variable (if set) and then
        the Debian package's location ``/usr/share/datasets/fashion-mnist``
        (``apt-get install dataset-fashion-mnist``) are searched.
    subset : {"train", "test", "all"}, default="train"
        The 60,000 training images, the 10,000 test images, or both (training
        first).
    dtype : {"float32", "uint8"}, default="float32"
        ``"float32"``: intensities scaled to [0, 1]; ``"uint8"``: the pixels
        as stored (0..255), a quarter of the memory, for a network that
        scales them with a transform (see the data guide).

    Returns
    -------
    X : ndarray of shape (n_samples, 1, 28, 28) and dtype float32 or uint8
        Pixel intensities.
    y : ndarray of shape (n_samples,) and dtype int64
        Class indices; their names are ``FASHION_MNIST_CLASSES``.

    Examples
    --------
    >>> from skal.datasets import load_fashion_mnist
    >>> X, y = load_fashion_mnist(subset="test")  # doctest: +SKIP
    >>> X.shape, y[:3]  # doctest: +SKIP
    ((10000, 1, 28, 28), array([9, 2, 1]))
    """
    parts = ["train", "test"] if subset == "all" else [subset]
    names = [name for part in parts for name in _FASHION_FILES[part]]
    searched = _candidate_dirs(path)
    for directory in searched:
        files = [_find(directory, name) for name in names]
        if all(files):
            break
    else:
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files {names} (plain or .gz) were not found in "
            f"{[str(d) for d in searched]}. Install them with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu, installs to "
            f"{DEBIAN_FASHION_MNIST}) or pass path= a directory holding them"
        )
    Xs, ys = [], []
    for images, labels in zip(files[::2], files[1::2]):
        X, y = read_idx(images), read_idx(labels)
        if X.ndim != 3 or y.ndim != 1 or len(X) != len(y):
            raise ValueError(
                f"{images} ({X.shape}) and {labels} ({y.shape}) are not matching "
                "image and label files"
            )
        Xs.append(X)
        ys.append(y)
    X = np.concatenate(Xs)[:, None]
    if dtype == "float32":
        X = X.astype(np.float32) / 255.0
    return X, np.concatenate(ys).astype(np.int64)


def load_digits_images():
    """scikit-learn's 8×8 digits as 1×8×8 float32 images in [0, 1].

    Returns
    -------
    X : ndarray of shape (1797, 1, 8, 8) and dtype float32
    y : ndarray of shape (1797,) and dtype int64

    Examples
    --------
    >>> from skal.datasets import load_digits_images
    >>> X, y = load_digits_images()
    >>> X.shape, X.dtype, float(X.max())
    ((1797, 1, 8, 8), dtype('float32'), 1.0)
    """
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y.astype(np.int64)


@validate_arguments(
    {
        "n_max": [Interval(Integral, 0, None, closed="left")],
        "n_classes": [Interval(Integral, 1, None, closed="left")],
        "imbalance_ratio": _RATIO,
    }
)
def long_tail_counts(n_max: int, n_classes: int, imbalance_ratio: float):
    """Per-class sizes ``n_c = floor(n_max * (1/rho) ** (c / (C - 1)))``.

    Parameters
    ----------
    n_max : int
        Size of the largest class (class 0).
    n_classes : int
        Number of classes C.
    imbalance_ratio : float
        The ratio rho of the largest to the smallest class size.

    Returns
    -------
    counts : ndarray of shape (n_classes,) and dtype int

    Examples
    --------
    >>> from skal.datasets import long_tail_counts
    >>> long_tail_counts(1000, 3, 100).tolist()
    [1000, 100, 10]
    """
    c = np.arange(n_classes)
    exponent = c / (n_classes - 1) if n_classes > 1 else c * 0.0
    # the small epsilon keeps exact powers (1000 * 0.1 = 100) from flooring down
    return np.floor(n_max * (1.0 / imbalance_ratio) ** exponent + 1e-9).astype(int)


@validate_arguments({"imbalance_ratio": _RATIO, "random_state": ["random_state"]})
def make_long_tailed(X, y, imbalance_ratio, random_state=None):
    """Subsample a data set to an exponential long-tail class profile.

    The classes, in sorted order, keep ``n_c = floor(n_max * (1/rho) **
    (c / (C - 1)))`` samples (TiDAL's imbalanced setting): class 0 is the
    largest with ``n_max`` samples, the last class has ``n_max / rho``.
    ``n_max`` is the size of the smallest class of ``y``, so that every class
    can supply its share (for a balanced set, its class size).

    Parameters
    ----------
    X : array-like of shape (n_samples, ...)
    y : array-like of shape (n_samples,)
    imbalance_ratio : float
        ``rho >= 1``, the ratio of the largest to the smallest class size.
    random_state : int, RandomState instance or None, default=None
        Chooses which samples of each class are kept.

    Returns
    -------
    X_lt : ndarray of shape (n_kept, ...)
    y_lt : ndarray of shape (n_kept,)
        The kept samples, in their original order.

    Examples
    --------
    >>> import numpy as np
    >>> from skal.datasets import make_long_tailed
    >>> X, y = np.zeros((3000, 2)), np.repeat([0, 1, 2], 1000)
    >>> X_lt, y_lt = make_long_tailed(X, y, imbalance_ratio=100, random_state=0)
    >>> np.bincount(y_lt).tolist()
    [1000, 100, 10]
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
    rng = check_random_state(random_state)
    classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    sizes = long_tail_counts(int(counts.min()), len(classes), imbalance_ratio)
    keep = np.concatenate(
        [
            rng.choice(np.flatnonzero(y_idx == k), sizes[k], replace=False)
            for k in range(len(classes))
        ]
    )
    keep.sort()
    return X[keep], y[keep]
