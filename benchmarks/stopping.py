"""Stopping criteria on simulated learning curves: where they stop, what it costs.

For each data set, strategy (entropy, random) and seed, one simulated run
of skal's study set-up (``benchmarks/label_efficiency.py``'s ``common``
protocol: the SmallCNN, Adam 3e-3, batch 16, warm start; 20 epochs per
round on digits, 10 on Fashion-MNIST to fit the CPU time) is extended to
more rounds, and every criterion of
:mod:`skal.stopping` is shown each round's model
(:func:`skal.model_selection.evaluate_stopping`). The table per data set
and strategy gives, per criterion: the share of runs that stopped within the
simulated rounds, and over those runs the mean labelled-set size at the
stop, the test accuracy at the stop, the accuracy at the last simulated
round, and the labels saved against that last round; and, over all runs,
the criterion's statistic at the last round (mean kappa over the window,
mean or largest uncertainty, share of changed predictions, ΔF, labels), to
show how far from its threshold a criterion that did not stop was.

Data sets: ``digits`` (scikit-learn's 8×8 digits, a stratified 70/30
split), ``fashion`` (a stratified subsample of Fashion-MNIST: 2,000 training
images as the pool, 1,000 test images) and ``fashion-lt100`` (the same with
a long-tailed pool, ρ = 100, and a balanced test set); Fashion-MNIST is read
from Debian's ``dataset-fashion-mnist`` package.

Usage::

    python benchmarks/stopping.py --seeds 3
    python benchmarks/stopping.py --dataset digits --seeds 1 --n-rounds 4
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from label_efficiency import load

import skal
from skal.model_selection import evaluate_stopping
from skal.stopping import (
    Budget,
    ClassificationChange,
    DeltaF,
    MaxConfidence,
    OverallUncertainty,
    StabilizingPredictions,
)

DATASETS = ("digits", "fashion", "fashion-lt100")
STRATEGIES = ("entropy", "random")
# per data set: pool, test, initial, per round, rounds, epochs per round
SIZES = ("pool_size", "test_size", "n_initial", "query_size", "n_rounds", "epochs")
DEFAULTS = {
    "digits": (None, None, 20, 20, 14, 20),
    "fashion": (2000, 1000, 40, 40, 10, 10),
    "fashion-lt100": (2000, 1000, 40, 40, 10, 10),
}
LR, BATCH_SIZE = 3e-3, 16


def criteria(budget):
    """The criteria, at their papers' settings, plus looser variants."""
    return {
        "kappa 0.99 (BV09)": StabilizingPredictions(random_state=0),
        "kappa 0.95": StabilizingPredictions(threshold=0.95, random_state=0),
        "overall unc. 0.05": OverallUncertainty(),
        "overall unc. 0.1": OverallUncertainty(threshold=0.1),
        "max confidence 0.05": MaxConfidence(),
        "class change 0": ClassificationChange(),
        "class change 0.02": ClassificationChange(threshold=0.02),
        "deltaF 0.01": DeltaF(random_state=0),
        "deltaF 0.02": DeltaF(threshold=0.02, random_state=0),
        f"budget {budget}": Budget(max_labels=budget),
    }


def run(name, args):
    defaults = dict(zip(SIZES, DEFAULTS[name]))
    for key in SIZES:
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    X, y, train, test, module_kw = load(name, args)
    final = args.n_initial + args.n_rounds * args.query_size
    budget = args.n_initial + (args.n_rounds // 2) * args.query_size
    print(
        f"\n## {name}: pool {len(train)}, test {len(test)}, labels "
        f"{args.n_initial}..{final} (+{args.query_size} per round), seeds "
        f"{args.seeds}",
        flush=True,
    )
    for strategy in args.strategy:
        net = skal.NeuralNetClassifier(
            skal.nets.SmallCNN,
            lr=LR,
            max_epochs=args.epochs,
            batch_size=BATCH_SIZE,
            device=args.device,
            **module_kw,
        )
        start = time.process_time()
        result = evaluate_stopping(
            skal.ActiveLearner(net, strategy),
            X,
            y,
            criteria(budget),
            cv=[(train, test)],
            n_initial=args.n_initial,
            query_size=args.query_size,
            n_rounds=args.n_rounds,
            n_seeds=args.seeds,
            random_state=args.random_state,
        )
        seconds = time.process_time() - start
        print(f"\n### {name}, {strategy} ({seconds:.0f} CPU s)\n")
        print(
            "| criterion | stopped | labels at stop | accuracy at stop | "
            f"accuracy at {final} | labels saved | statistic at {final} |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in result.table():
            last = np.nanmean(result.values[row["criterion"]][:, -1])
            print(
                f"| {row['criterion']} | {row['stopped'] * row['n_runs']:.0f}/"
                f"{row['n_runs']} | {row['labels_at_stop']:.0f} | "
                f"{row['score_at_stop']:.4f} | {row['final_score']:.4f} | "
                f"{row['labels_saved']:.0f} | {last:.4f} |",
                flush=True,
            )
        curve = result.scores.mean(axis=0)
        print(
            "\nmean accuracy per round: "
            + " ".join(f"{n}:{s:.3f}" for n, s in zip(result.n_labeled, curve))
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", choices=DATASETS, default=DATASETS)
    parser.add_argument("--strategy", nargs="+", choices=STRATEGIES, default=STRATEGIES)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool-size", type=int, help="subsample the pool to this")
    parser.add_argument("--test-size", type=int, help="subsample the test set")
    parser.add_argument("--n-initial", type=int)
    parser.add_argument("--query-size", type=int)
    parser.add_argument("--n-rounds", type=int)
    parser.add_argument("--epochs", type=int, help="epochs per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--data", help="Fashion-MNIST directory (default: Debian's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    np.seterr(all="ignore")
    print("command: python " + " ".join(sys.argv), flush=True)
    for name in args.dataset:
        run(name, argparse.Namespace(**vars(args)))


if __name__ == "__main__":
    main()
