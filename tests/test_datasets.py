"""Tests of skal.datasets: IDX reading, Fashion-MNIST layouts, digits, long tail."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from skal import datasets
from skal.datasets import (
    load_digits_images,
    load_fashion_mnist,
    long_tail_counts,
    make_long_tailed,
    read_idx,
)

_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.tobytes()


def _write_fashion(directory, compress, n_train=6, n_test=4):
    """Tiny IDX files: image i of split s has every pixel = label*10 + i."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        images = (labels * 10 + np.arange(n))[:, None, None] * np.ones(
            (1, 28, 28), dtype=int
        )
        data[split] = (images, labels)
        for name, arr in zip(_NAMES[split], (images, labels)):
            raw = _idx_bytes(arr)
            if compress:
                (directory / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (directory / name).write_bytes(raw)
    return data


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_load_fashion_mnist_from_path(tmp_path, compress, layout):
    where = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    data = _write_fashion(where, compress)
    X, y = load_fashion_mnist(tmp_path)
    assert X.shape == (6, 1, 28, 28) and X.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, data["train"][1])
    np.testing.assert_allclose(X[:, 0, 3, 5] * 255, data["train"][0][:, 3, 5])
    X_test, y_test = load_fashion_mnist(tmp_path, subset="test")
    np.testing.assert_array_equal(y_test, data["test"][1])
    X_all, y_all = load_fashion_mnist(tmp_path, subset="all")
    assert len(X_all) == 10
    np.testing.assert_array_equal(y_all, np.concatenate([y, y_test]))
    np.testing.assert_array_equal(X_all[6:], X_test)


def test_load_fashion_mnist_default_location(tmp_path, monkeypatch):
    _write_fashion(tmp_path / "debian", compress=True)
    monkeypatch.delenv("SKAL_DATA", raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    X, y = load_fashion_mnist()
    assert X.shape == (6, 1, 28, 28)
    monkeypatch.setenv("SKAL_DATA", str(tmp_path / "nowhere"))
    assert len(load_fashion_mnist()[0]) == 6  # falls back to the Debian path


def test_load_fashion_mnist_missing_names_install_command(tmp_path, monkeypatch):
    monkeypatch.delenv("SKAL_DATA", raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(
        FileNotFoundError, match="apt-get install dataset-fashion-mnist"
    ):
        load_fashion_mnist()
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_fashion_mnist(tmp_path / "partial")


def test_load_fashion_mnist_rejects_bad_subset(tmp_path):
    with pytest.raises(
        ValueError,
        match="The 'subset' parameter of load_fashion_mnist must be one of "
        "{'all', 'test', 'train'}; got 'validation'",
    ):
        load_fashion_mnist(tmp_path, subset="validation")


def test_read_idx_rejects_corrupt_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(np.zeros((2, 3)))[:-1])
    with pytest.raises(ValueError, match="needs"):
        read_idx(short)


def test_load_digits_images():
    X, y = load_digits_images()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.dtype == np.int64 and set(y) == set(range(10))


def test_long_tail_counts_follow_the_profile():
    counts = long_tail_counts(6000, 10, 100)
    assert counts[0] == 6000 and counts[-1] == 60
    expected = np.floor(6000 * 0.01 ** (np.arange(10) / 9))
    np.testing.assert_allclose(counts, expected, atol=1)
    assert (np.diff(counts) < 0).all()
    np.testing.assert_array_equal(long_tail_counts(50, 4, 1), [50] * 4)


def test_make_long_tailed():
    rng = np.random.RandomState(0)
    y = np.repeat(np.array([3, 1, 2, 0]), [120, 100, 150, 100])
    X = rng.randn(len(y), 2, 2)
    X_lt, y_lt = make_long_tailed(X, y, imbalance_ratio=10, random_state=0)
    # classes in sorted order 0, 1, 2, 3 shrink from n_max = 100 (smallest class)
    np.testing.assert_array_equal(
        [np.sum(y_lt == c) for c in range(4)], long_tail_counts(100, 4, 10)
    )
    # rows are kept whole, in their original order
    idx = [np.flatnonzero((X == row).all(axis=(1, 2)))[0] for row in X_lt]
    assert (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(y[idx], y_lt)
    again = make_long_tailed(X, y, imbalance_ratio=10, random_state=0)
    np.testing.assert_array_equal(again[1], y_lt)


@pytest.mark.parametrize(
    "ratio, error", [(0.5, ValueError), ("10", TypeError), (np.nan, ValueError)]
)
def test_make_long_tailed_rejects_bad_ratio(ratio, error):
    with pytest.raises(error, match=r"'imbalance_ratio' .* a float in \[1, inf\)"):
        make_long_tailed(np.zeros((4, 1)), [0, 0, 1, 1], ratio)
