"""Peak memory of an entropy query over the 60,000 uint8 Fashion-MNIST images.

The pool is kept as stored (uint8, 47 MB); the script prints the pool's
bytes, the peak growth of the process's resident memory while
``ActiveLearner.query`` runs (sampled every 2 ms by a thread), and their
ratio. The model is a small CNN trained for one epoch on 1,000 images: what
is measured is the query, not the model.

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
    net = skal.NeuralNetClassifier(
        skal.nets.SmallCNN,
        module__channels=8,
        module__hidden=64,
        max_epochs=1,
        batch_size=128,
    )
    learner = skal.ActiveLearner(net, strategy="entropy", random_state=0)
    learner.fit(pool[:1000], y[:1000])
    gc.collect()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        picked = learner.query(pool, n=100)
        seconds = time.perf_counter() - t0
    growth = mem.peak - mem.start
    mb = 1024**2
    print(f"skal: {skal.__file__}")
    print(f"{'pool':>6} {'dtype':>6} {'pool MB':>8} {'peak RSS growth MB':>19} "
          f"{'growth / pool':>14} {'query s':>8}")
    print(f"{len(pool):>6} {str(pool.dtype):>6} {pool.nbytes / mb:>8.1f} "
          f"{growth / mb:>19.1f} {growth / pool.nbytes:>14.2f} {seconds:>8.1f}")
    print(f"first picks: {picked[:5].tolist()}")


if __name__ == "__main__":
    main()
