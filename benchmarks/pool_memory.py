"""Peak memory of an entropy query over the 60,000 uint8 Fashion-MNIST images.

The pool is kept as stored (uint8, 45 MB). For each inference batch size
(``iterator_valid__batch_size``, read by every skal version), the script
prints the peak growth of the process's resident memory (sampled every 2 ms
by a thread) during one forward pass of a single batch (the model's own
working memory: activations, convolution buffers) and during
``ActiveLearner.query`` over the whole pool, the query's growth beyond the
single batch. Each row runs in a fresh process, and the allocator's free
pages are given back to the OS before each measurement. Rows are measured
with glibc's default (dynamic) mmap threshold and with
``MALLOC_MMAP_THRESHOLD_=1048576``: with the dynamic threshold, freed
batch-sized buffers move the threshold up and later ones are carved from the
heap, where long-lived small allocations between them (a list of per-batch
outputs, as skorch's ``predict_proba`` keeps) fragment it. The model is a
small CNN trained for one epoch on 1,000 images.

The same script runs on older skal versions (it sets only parameters they
have), which is how the "before" column of the data guide was measured:
``git worktree add /tmp/before <commit>`` and
``PYTHONPATH=/tmp/before python benchmarks/pool_memory.py``.

Run from the repository root::

    PYTHONPATH=. python benchmarks/pool_memory.py

Needs the Fashion-MNIST IDX files (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import threading
import time

import numpy as np
import torch

import skal
from skal.datasets import load_fashion_mnist

_PAGE = os.sysconf("SC_PAGE_SIZE")


def release_free_memory():
    """Collect garbage and give the allocator's free pages back to the OS, so
    that a growth measured next is the block's own."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


class PeakRSS:
    """Highest resident set size seen while the block runs."""

    def __enter__(self):
        self.start = rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def measure(batch_size):
    """One row of the table, in a fresh process."""
    torch.set_num_threads(1)
    X, y = load_fashion_mnist()
    pool = (X * 255).round().astype(np.uint8)
    del X
    net = skal.NeuralNetClassifier(
        skal.nets.SmallCNN,
        module__channels=8,
        module__hidden=64,
        max_epochs=1,
        batch_size=128,
        iterator_valid__batch_size=batch_size,
    )
    learner = skal.ActiveLearner(net, strategy="entropy", random_state=0)
    learner.fit(pool[:1000], y[:1000])
    module = learner.estimator_.module_.eval()
    release_free_memory()
    with PeakRSS() as one, torch.no_grad():
        module(torch.zeros(batch_size, 1, 28, 28))
    release_free_memory()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        learner.query(pool, n=100)
        seconds = time.perf_counter() - t0
    mb = 1024**2
    batch = one.peak - one.start
    growth = mem.peak - mem.start
    beyond = growth - batch
    threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_", "dynamic")
    print(
        f"{batch_size:>5} {threshold:>14} {pool.nbytes / mb:>7.1f} {batch / mb:>12.1f} "
        f"{growth / mb:>9.1f} {beyond / mb:>15.1f} {seconds:>8.1f}"
    )


def main():
    print(f"skal: {skal.__file__}")
    print("pool: 60,000 Fashion-MNIST training images, (1, 28, 28), uint8")
    print(
        f"{'batch':>5} {'mmap threshold':>14} {'pool MB':>7} {'one batch MB':>12} "
        f"{'query MB':>9} "
        f"{'beyond batch MB':>15} {'query s':>8}",
        flush=True,
    )
    for threshold in (None, "1048576"):
        env = dict(os.environ)
        if threshold is not None:
            env["MALLOC_MMAP_THRESHOLD_"] = threshold
        for batch_size in (128, 512):
            subprocess.run(
                [sys.executable, __file__, str(batch_size)], check=True, env=env
            )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        measure(int(sys.argv[1]))
    else:
        main()
