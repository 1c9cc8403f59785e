"""Does batch-aware dynamicAL close the gap? AULC and final accuracy.

Runs :func:`skal.model_selection.compare_strategies` with the same fixed
training for every strategy (Adam, ``--lr``, ``--max-epochs`` per round,
weights kept across rounds), the same held-out split, seeds and initial
labelled sets, on

- ``digits``: scikit-learn's 8×8 digits (1×8×8), a stratified 70/30 split
  (``random_state=0``); SmallCNN;
- ``fashion``: Fashion-MNIST, a stratified pool of ``--pool-size`` training
  images and ``--test-size`` test images (``random_state=0``); TutorialCNN.

The splits, seeds and defaults are those of ``benchmarks/label_efficiency.py``,
so rows of the two scripts with the same sizes are paired.

Strategies: any registered name, or one of these variants:

- ``dynamic_al_batch_neg``: ``BatchDynamicAL(pairwise_weight=-1)``, the
  pairwise terms subtracted (a diversity variant);
- ``dynamic_al_batch_sketch``: ``BatchDynamicAL(sketch_size=256)``;
- ``softrank_entropy``: ``StochasticBatch("entropy", mode="softrank")``;
- ``power_margin``: ``StochasticBatch("margin", mode="power")``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/batch_dynamic_al_comparison.py \\
        --dataset digits --seeds 5 --n-initial 30 --query-size 30 --n-rounds 8 \\
        --strategy random --strategy dynamic_al --strategy dynamic_al_batch_neg
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from label_efficiency import _subsample  # a stratified subsample
from sklearn.model_selection import train_test_split

import skal
from skal.datasets import load_digits_images, load_fashion_mnist
from skal.model_selection import compare_strategies
from skal.strategies import BatchDynamicAL, StochasticBatch

VARIANTS = {
    "dynamic_al_batch_neg": lambda: BatchDynamicAL(pairwise_weight=-1.0),
    "dynamic_al_batch_sketch": lambda: BatchDynamicAL(sketch_size=256),
    "softrank_entropy": lambda: StochasticBatch("entropy", mode="softrank"),
    "power_margin": lambda: StochasticBatch("margin", mode="power"),
}


def load(name, args):
    """X, y, the held-out split and the module, as label_efficiency.py."""
    if name == "digits":
        X, y = load_digits_images()
        train, test = train_test_split(
            np.arange(len(y)), test_size=0.3, stratify=y, random_state=0
        )
        return X, y, train, test, skal.nets.SmallCNN, {}
    X_pool, y_pool = _subsample(*load_fashion_mnist(subset="train"), args.pool_size)
    X_test, y_test = _subsample(*load_fashion_mnist(subset="test"), args.test_size)
    X = np.concatenate([X_pool, X_test])
    y = np.concatenate([y_pool, y_test])
    train = np.arange(len(y_pool))
    test = np.arange(len(y_pool), len(y))
    module_kw = {"module__in_channels": 1, "module__input_size": 28}
    return X, y, train, test, skal.nets.TutorialCNN, module_kw


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "fashion"), default="digits")
    parser.add_argument("--strategy", action="append", required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pool-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--n-initial", type=int, default=30)
    parser.add_argument("--query-size", type=int, default=30)
    parser.add_argument("--n-rounds", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("command: python " + " ".join(sys.argv), flush=True)
    X, y, train, test, module, module_kw = load(args.dataset, args)
    net = skal.NeuralNetClassifier(
        module,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        **module_kw,
    )
    strategies = {s: VARIANTS[s]() if s in VARIANTS else s for s in args.strategy}
    print(
        f"## {args.dataset}: pool {len(train)}, test {len(test)}, "
        f"{module.__name__}, n_initial={args.n_initial}, "
        f"query_size={args.query_size}, n_rounds={args.n_rounds}, "
        f"max_epochs={args.max_epochs}, seeds={args.seeds}",
        flush=True,
    )
    start = time.perf_counter()
    result = compare_strategies(
        skal.ActiveLearner(net),
        X,
        y,
        strategies,
        cv=[(train, test)],
        n_initial=args.n_initial,
        query_size=args.query_size,
        n_rounds=args.n_rounds,
        n_seeds=args.seeds,
        random_state=0,
    )
    print(result.to_string())
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
