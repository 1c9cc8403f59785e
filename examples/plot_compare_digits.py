"""
dynamicAL and TiDAL against the baselines on digits
===================================================

An active-learning simulation on scikit-learn's 8x8 digits (shipped with
sklearn, no download). A small CNN starts from 30 labelled images; each round
a strategy picks 30 more from the pool, whose labels stay hidden until they
are queried, and the network trains on from its current weights with a fresh
optimizer. Six strategies run on the same split, seeds and initial labelled
sets, each with the network it needs:

- ``random``, ``entropy``, ``margin`` and ``badge`` with a plain CNN;
- ``dynamic_al`` (dynamicAL) with the same CNN;
- ``tidal`` (TiDAL) with :class:`skal.TiDALClassifier`, the same CNN trained
  jointly with a training-dynamics prediction head.

All train the same way (Adam, a fixed number of epochs per round), so only
the strategy and, for TiDAL, the head differ. Test accuracy is printed per
round (mean ± std over the seeds) with the area under each learning curve
(AULC), and the learning curves are drawn (mean ± std bands).

Run it with ``make demo`` (or ``python examples/plot_compare_digits.py``;
``--figure curves.png`` chooses where the figure is saved). It runs on one
CPU thread and takes about 2 CPU-minutes.
"""

import argparse
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.model_selection import train_test_split

import skal
from skal.datasets import load_digits_images
from skal.model_selection import aulc, compare_strategies

STRATEGIES = ["random", "entropy", "margin", "badge", "dynamic_al", "tidal"]


def make_learners(max_epochs):
    """One learner per strategy, each with the network it needs."""
    params = dict(module__channels=16, max_epochs=max_epochs, lr=3e-3, batch_size=64)
    learners = {}
    for name in STRATEGIES:
        if name == "tidal":
            # the head reads the two convolution blocks of the CNN
            net = skal.TiDALClassifier(
                skal.nets.SmallCNN, tidal_layers=["features.1", "features.3"],
                **params,
            )  # fmt: skip
        else:
            net = skal.NeuralNetClassifier(skal.nets.SmallCNN, **params)
        learners[name] = skal.ActiveLearner(net, strategy=name)
    return learners


def print_table(result, n_seeds):
    """Accuracy per round and AULC, mean ± std over the seeds."""
    names = list(result.scores)
    print(f"Test accuracy on digits (SmallCNN), mean ± std over {n_seeds} seeds")
    header = f"{'labelled':>8}  " + "  ".join(f"{s:>13}" for s in names)
    print(header)
    print("-" * len(header))
    for r, n in enumerate(result.n_labeled):
        cells = [
            f"{result.scores[s][:, r].mean():.3f} ± {result.scores[s][:, r].std():.3f}"
            for s in names
        ]
        print(f"{n:>8}  " + "  ".join(f"{c:>13}" for c in cells))
    print("-" * len(header))
    areas = {s: aulc(result.n_labeled, result.scores[s]) for s in names}
    cells = [f"{areas[s].mean():.3f} ± {areas[s].std():.3f}" for s in names]
    print(f"{'AULC':>8}  " + "  ".join(f"{c:>13}" for c in cells))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="dynamicAL and TiDAL against the baselines on digits"
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-initial", type=int, default=30)
    parser.add_argument("--query-size", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument(
        "--figure", metavar="PATH", help="save the learning curves there"
    )
    args = parser.parse_args(argv)
    # Small convolutions gain nothing from intra-op threads.
    torch.set_num_threads(1)
    start = time.process_time()

    X, y = load_digits_images()
    train, test = train_test_split(
        np.arange(len(y)), test_size=0.3, stratify=y, random_state=0
    )
    result = compare_strategies(
        make_learners(args.max_epochs),
        X,
        y,
        cv=[(train, test)],
        n_initial=args.n_initial,
        query_size=args.query_size,
        n_rounds=args.rounds,
        n_seeds=args.seeds,
        random_state=0,
    )
    print_table(result, args.seeds)
    print(f"({time.process_time() - start:.0f} CPU seconds)")
    ax = result.plot(
        ax=plt.subplots(figsize=(6.4, 4.2), layout="constrained")[1],
        title=f"Digits, SmallCNN: mean ± std over {args.seeds} seeds",
    )
    if args.figure:
        ax.figure.savefig(args.figure, dpi=120)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
