"""Label efficiency of skal's strategies: AULC and final accuracy per data set.

Simulates active learning with a small CNN on held-out splits, every
registered strategy (:func:`skal.strategies.get_strategy_names`, so new
strategies are picked up automatically; one that cannot run on the model is
skipped with a message), several seeds, and prints mean ± std of the AULC and
of the final test accuracy per strategy, and writes a plot of the learning
curves (mean ± std bands) per data set.

Data sets:

- ``digits``: scikit-learn's 8×8 digits (1×8×8), a stratified 70/30 split;
  SmallCNN.
- ``fashion``: Fashion-MNIST (``apt-get install dataset-fashion-mnist``); the
  pool is a stratified subsample of the 60,000 training images, the test set a
  stratified subsample of the 10,000 test images; TutorialCNN (1×28×28).
- ``fashion-lt``: the same with a long-tailed pool (ALGORITHMS.md §2,
  ρ = ``--imbalance-ratio``, default 100) and a balanced test set.

The defaults are sized for 2 CPU cores (see docs/label_efficiency.md for the
measured times); ``--scale paper`` switches to the TiDAL/dynamicAL protocol
sizes (whole pool and test set, 1,000 initial labels and 1,000 per round,
200 epochs) for a GPU (``--device cuda``); any size flag overrides both.

Usage::

    python benchmarks/label_efficiency.py                     # all three, CPU
    python benchmarks/label_efficiency.py --dataset digits --seeds 5
    python benchmarks/label_efficiency.py --scale paper --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

import skal
from skal.datasets import load_digits_images, load_fashion_mnist, make_long_tailed
from skal.model_selection import compare_strategies
from skal.strategies import get_strategy_names

DATASETS = ("digits", "fashion", "fashion-lt")
SIZES = ("pool_size", "test_size", "n_initial", "query_size", "n_rounds")
SIZES += ("max_epochs", "batch_size", "lr")
# per data set and scale: pool, test, initial, per round, rounds, epochs, batch, lr
DEFAULTS = {
    "cpu": {
        "digits": (None, None, 20, 20, 10, 30, 32, 1e-3),
        "fashion": (10000, 2000, 100, 100, 10, 20, 32, 1e-3),
        "fashion-lt": (10000, 2000, 100, 100, 10, 20, 32, 1e-3),
    },
    "paper": {
        "digits": (None, None, 20, 20, 10, 100, 32, 1e-3),
        "fashion": (None, None, 1000, 1000, 10, 200, 128, 1e-3),
        "fashion-lt": (None, None, 500, 500, 10, 200, 128, 1e-3),
    },
}


def load(name, args, random_state):
    """X, y and the one held-out split ``[(train, test)]`` of a data set."""
    if name == "digits":
        X, y = load_digits_images()
        train, test = train_test_split(
            np.arange(len(y)), test_size=0.3, stratify=y, random_state=random_state
        )
        return X, y, train, test, skal.nets.SmallCNN, {}
    X_pool, y_pool = load_fashion_mnist(args.data, subset="train")
    X_test, y_test = load_fashion_mnist(args.data, subset="test")
    if name == "fashion-lt":
        X_pool, y_pool = make_long_tailed(
            X_pool, y_pool, args.imbalance_ratio, random_state=random_state
        )
    X_pool, y_pool = _subsample(X_pool, y_pool, args.pool_size, random_state)
    X_test, y_test = _subsample(X_test, y_test, args.test_size, random_state)
    X = np.concatenate([X_pool, X_test])
    y = np.concatenate([y_pool, y_test])
    train = np.arange(len(y_pool))
    test = np.arange(len(y_pool), len(y))
    module_kw = {"module__in_channels": 1, "module__input_size": 28}
    return X, y, train, test, skal.nets.TutorialCNN, module_kw


def _subsample(X, y, size, random_state):
    """A stratified subsample (keeps the class proportions, long tail too)."""
    if size is None or size >= len(y):
        return X, y
    keep, _ = train_test_split(
        np.arange(len(y)), train_size=size, stratify=y, random_state=random_state
    )
    keep.sort()
    return X[keep], y[keep]


def run(name, args):
    defaults = dict(zip(SIZES, DEFAULTS[args.scale][name]))
    for key in SIZES:
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    X, y, train, test, module, module_kw = load(name, args, args.random_state)
    net = skal.NeuralNetClassifier(
        module,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        **module_kw,
    )
    learner = skal.ActiveLearner(net, subset_size=args.subset_size)
    counts = np.bincount(y[train])
    print(
        f"\n## {name}: pool {len(train)} (class sizes {counts.min()}..{counts.max()}),"
        f" test {len(test)}, {module.__name__}, n_initial={args.n_initial}, "
        f"query_size={args.query_size}, n_rounds={args.n_rounds}, "
        f"max_epochs={args.max_epochs}, seeds={args.seeds}, device={args.device}",
        flush=True,
    )
    start = time.perf_counter()
    result = compare_strategies(
        learner,
        X,
        y,
        args.strategy or get_strategy_names(),
        errors="warn",
        cv=[(train, test)],
        n_initial=args.n_initial,
        query_size=args.query_size,
        n_rounds=args.n_rounds,
        n_seeds=args.seeds,
        initial=args.initial,
        n_jobs=args.n_jobs,
        random_state=args.random_state,
        checkpoint_dir=(
            None if args.checkpoint_dir is None else Path(args.checkpoint_dir) / name
        ),
        verbose=args.verbose,
    )
    elapsed = time.perf_counter() - start
    print(result.to_string())
    path = Path(args.out_dir) / f"label_efficiency_{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"{name}: test accuracy, mean ± std over {args.seeds} seeds"
    result.plot(path, title=title)
    print(f"({elapsed:.0f} s; plot: {path})", flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", choices=DATASETS, default=DATASETS)
    parser.add_argument(
        "--strategy",
        action="append",
        help="a registered strategy (repeatable); default: every registered one",
    )
    parser.add_argument("--scale", choices=sorted(DEFAULTS), default="cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool-size", type=int, help="subsample the pool to this")
    parser.add_argument("--test-size", type=int, help="subsample the test set")
    parser.add_argument("--n-initial", type=int)
    parser.add_argument("--query-size", type=int)
    parser.add_argument("--n-rounds", type=int)
    parser.add_argument("--max-epochs", type=int, help="epochs per fit and round")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--subset-size", type=int, help="score a random pool subset")
    parser.add_argument("--initial", choices=("random", "stratified"), default="random")
    parser.add_argument("--imbalance-ratio", type=float, default=100.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--data", help="Fashion-MNIST directory (default: Debian's)")
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--checkpoint-dir", help="resume interrupted runs from here")
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("command: python " + " ".join(sys.argv), flush=True)
    for name in args.dataset:
        run(name, argparse.Namespace(**vars(args)))


if __name__ == "__main__":
    main()
