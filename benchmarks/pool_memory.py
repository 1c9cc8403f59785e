"""Peak memory of an entropy query over the 60,000 uint8 Fashion-MNIST images.

The pool is kept as stored (uint8, 45 MB). For each inference batch size
(``iterator_valid__batch_size``, read by every skal version), the script
prints the peak growth of the process's resident memory (sampled every 2 ms
by a thread) during one forward pass of a single batch (the model's own
working memory: activations, convolution buffers) and during
``ActiveLearner.query`` over the whole pool, the query's growth beyond the
single batch, and that excess over the pool's bytes. The model is a small
CNN trained for one epoch on 1,000 images.

Run from the repository root::

    PYTHONPATH=. python benchmarks/pool_memory.py

Needs the Fashion-MNIST IDX files (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
import torch

import skal
from skal.datasets import load_fashion_mnist

_PAGE = os.sysconf("SC_PAGE_SIZE")


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


def main():
    torch.set_num_threads(1)
    X, y = load_fashion_mnist()
    pool = (X * 255).round().astype(np.uint8)
    del X
    gc.collect()
    mb = 1024**2
    print(f"skal: {skal.__file__}")
    print(f"pool: {pool.shape} {pool.dtype}, {pool.nbytes / mb:.1f} MB")
    header = (
        f"{'batch':>5} {'one batch MB':>12} {'query MB':>9} "
        f"{'beyond batch MB':>15} {'beyond / pool':>13} {'query s':>8}"
    )
    print(header)
    for batch_size in (128, 512):
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
        module = learner.estimator_.module_
        gc.collect()
        with PeakRSS() as one, torch.no_grad():
            module(torch.zeros(batch_size, 1, 28, 28))
        gc.collect()
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            learner.query(pool, n=100)
            seconds = time.perf_counter() - t0
        batch = one.peak - one.start
        growth = mem.peak - mem.start
        beyond = growth - batch
        print(
            f"{batch_size:>5} {batch / mb:>12.1f} {growth / mb:>9.1f} "
            f"{beyond / mb:>15.1f} {beyond / pool.nbytes:>13.2f} {seconds:>8.1f}"
        )


if __name__ == "__main__":
    main()
