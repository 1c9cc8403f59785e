"""BADGE's k-means++ seeding on synthetic gradient-embedding factors.

Times ``kmeans_pp_gradient`` (b = 1,000 picks) on factors of several shapes
and kinds, side by side with the version that computes every distance at
every step (``previous_kmeans_pp_gradient``, kept in
tests/test_strategies.py), and checks that the picks are the same:

- ``a`` are probabilities minus the one-hot vector of the predicted class,
  from random logits times a sharpness (0.3: flat, as from an untrained net;
  3: confident), with balanced predicted classes or, for ``imbalanced``, a
  few classes holding most rows;
- ``h`` are random embeddings after a ReLU, or of either sign (``signed``).

Usage (from the repository root, so that the tests import)::

    PYTHONPATH=. python benchmarks/badge_seeding.py
    PYTHONPATH=. python benchmarks/badge_seeding.py --repeats 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import measure, print_table  # noqa: E402

from skal.strategies import kmeans_pp_gradient  # noqa: E402

CASES = (
    # name, N, C, D, sharpness, kind
    ("flat, balanced", 50_000, 10, 512, 0.3, "balanced"),
    ("confident, balanced", 50_000, 10, 512, 3.0, "balanced"),
    ("confident, balanced", 50_000, 100, 512, 3.0, "balanced"),
    ("flat, imbalanced", 50_000, 25, 512, 0.7, "imbalanced"),
    ("signed embeddings", 20_000, 10, 256, 1.0, "signed"),
)


def factors(n, n_classes, dim, sharpness, kind, seed=1):
    """Gradient-embedding factors ``a`` (N x C) and ``h`` (N x D), float32."""
    rng = np.random.RandomState(seed)
    logits = rng.randn(n, n_classes)
    if kind == "imbalanced":
        logits = logits + np.linspace(2.0, 0.0, n_classes)
    a = torch.softmax(torch.tensor(logits * sharpness), 1)
    a[torch.arange(n), a.argmax(1)] -= 1
    h = rng.randn(n, dim)
    if kind != "signed":
        h = np.maximum(h, 0)
    return a.float(), torch.tensor(h, dtype=torch.float32)


def main(argv=None):
    from tests.test_strategies import previous_kmeans_pp_gradient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--query-size", type=int, default=1000)
    args = parser.parse_args(argv)
    b = args.query_size
    rows = []
    for name, n, c, d, sharpness, kind in CASES:
        a, h = factors(n, c, d, sharpness, kind)
        seconds, _, ours = measure(
            lambda a=a, h=h: kmeans_pp_gradient(
                a, h, b, random_state=np.random.RandomState(0)
            ),
            repeats=args.repeats,
        )
        every, _, theirs = measure(
            lambda a=a, h=h: previous_kmeans_pp_gradient(
                a, h, b, np.random.RandomState(0)
            ),
            repeats=1,
        )
        rows.append(
            {
                "factors": name,
                "N": n,
                "C": c,
                "D": d,
                "seconds": f"{seconds:.3f}",
                "every distance s": f"{every:.3f}",
                "ratio": f"{seconds / every:.3f}",
                "same picks": "yes" if np.array_equal(ours, theirs) else "NO",
            }
        )
    print(f"torch threads={torch.get_num_threads()} b={b}")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
