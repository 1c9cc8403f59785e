"""Entropy over a synthetic pool Dataset: time and memory against a plain loop.

The pool is a ``torch.utils.data.Dataset`` of ``--n`` images (3x32x32,
default 1,000,000), each generated deterministically from its index and
never stored. Two passes over it, timed side by side (best of
``--repeats``, interleaved):

- plain: a ``DataLoader`` (the net's inference batch size and
  ``--num-workers``) and the tutorial CNN's forward in eval mode under
  ``torch.no_grad``, outputs dropped;
- entropy query: ``ActiveLearner(net, "entropy").query(pool, n=--query)``
  with the same network (fitted for one epoch on 256 images), i.e. the
  learner's input handling, the net's batch loop over the Dataset, the
  entropy of each batch and the top n (the N scores are the only thing kept).

Memory: the peak resident set above the level before the call, minus the N
float64 scores.

Usage::

    python benchmarks/pool_scale.py                    # 1,000,000 images
    python benchmarks/pool_scale.py --n 50000 --device cuda
    python benchmarks/pool_scale.py --n 200000 --pool uint8 --device cuda

On CUDA a third pass runs the query with ``iterator_valid__pin_memory=True``
(pinned batches, copied without blocking; skal does not pin by default).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import check_device, fmt_bytes, measure, print_table  # noqa: E402

import skal  # noqa: E402


class SyntheticImages(torch.utils.data.Dataset):
    """``n`` images 3x32x32 computed from the index (no storage)."""

    def __init__(self, n):
        self.n = n
        grid = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(3, 32, 32)
        self.grid = grid / grid.numel()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        phase = (i * 0.6180339887) % 1.0
        x = torch.sin(2 * math.pi * (self.grid * (1 + i % 7) + phase))
        return x, 0


def _as_uint8(x):
    return ((x + 1) * 127.5).round().to(torch.uint8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--query", type=int, default=1000, help="n of the query")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--pool",
        choices=["dataset", "uint8"],
        default="dataset",
        help="the synthetic Dataset, or the same images as one uint8 array in "
        "memory (where the transfer, not the reading, is what costs)",
    )
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    net = skal.NeuralNetClassifier(
        skal.nets.TutorialCNN,
        device=args.device,
        max_epochs=1,
        inference_batch_size=args.batch_size,
        iterator_valid__num_workers=args.num_workers,
    )
    labelled = SyntheticImages(256)
    y = np.arange(256) % 10
    learner = skal.ActiveLearner(
        net, "entropy", classes=np.arange(10), random_state=0
    ).fit(labelled, y)
    module = learner.estimator_.module_.eval()
    pool = SyntheticImages(args.n)
    if args.pool == "uint8":
        pool = torch.utils.data.TensorDataset(
            torch.stack([_as_uint8(pool[i][0]) for i in range(args.n)]),
            torch.zeros(args.n, dtype=torch.long),
        )

    # the plain loop transfers as skal does by default: from pageable memory
    cuda = torch.device(args.device).type == "cuda"

    def plain():
        loader = torch.utils.data.DataLoader(
            pool,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
        with torch.no_grad():
            for xb, _ in loader:
                module(xb.to(args.device).float())

    def entropy():
        return learner.query(pool, n=args.query)

    # pinned batches
    pinned = copy.deepcopy(learner)
    pinned.estimator_.set_params(iterator_valid__pin_memory=True)

    def pinned_query():
        return pinned.query(pool, n=args.query)

    rows = []
    best = {}
    mem = {}
    for _ in range(args.repeats):
        passes = [("plain DataLoader forward", plain), ("entropy query", entropy)]
        if cuda:
            passes.append(("entropy query, pin_memory=True", pinned_query))
        for name, fn in passes:
            seconds, peak, _ = measure(fn, device=args.device, repeats=1)
            best[name] = min(best.get(name, math.inf), seconds)
            mem[name] = max(mem.get(name, 0), peak or 0)
    scores = 8 * args.n
    for name in best:
        rows.append(
            {
                "pass": name,
                "N": args.n,
                "seconds": f"{best[name]:.2f}",
                "ratio": f"{best[name] / best['plain DataLoader forward']:.3f}",
                "peak_mem": fmt_bytes(mem[name]),
                "beyond N scores": fmt_bytes(max(mem[name] - scores, 0)),
            }
        )
    print(f"device={args.device} torch threads={torch.get_num_threads()}")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
