"""
Uncertainty sampling vs random sampling on digits
=================================================

An active-learning simulation on scikit-learn's 8x8 digits (shipped with
sklearn, no download): a small CNN starts from 30 labelled images, and each
round a strategy picks 30 more from the pool, whose labels stay hidden until
they are queried. The learner warm-starts: each round continues training from
the current weights with a fresh optimizer. Accuracy on a held-out test split
is printed per round, averaged over seeds, and drawn as learning curves
(mean ± standard deviation over the seeds).

Run it with ``python examples/plot_uncertainty_digits.py`` (``--save-figure
curves.png`` also saves the figure); it takes about a minute on 2 CPU cores.
``make demo`` runs the comparison with dynamicAL and TiDAL instead
(``plot_compare_digits.py``).
"""

import argparse

import matplotlib.pyplot as plt
import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import skal

STRATEGIES = ["random", "least_confidence", "margin", "entropy"]


def simulate(
    strategy,
    X_train,
    y_train,
    X_test,
    y_test,
    *,
    seed,
    n_initial,
    query_size,
    n_rounds,
    max_epochs,
):
    """Accuracy after the initial fit and after each query round."""
    # Small convolutions gain nothing from intra-op threads; one thread per
    # simulation, simulations in parallel, avoids oversubscribing the cores.
    torch.set_num_threads(1)
    rng = np.random.RandomState(seed)
    labeled = rng.choice(len(X_train), n_initial, replace=False)
    pool = np.setdiff1d(np.arange(len(X_train)), labeled)
    net = skal.NeuralNetClassifier(
        skal.nets.SmallCNN,
        module__channels=16,
        max_epochs=max_epochs,
        lr=3e-3,
        batch_size=64,
    )
    learner = skal.ActiveLearner(
        net, strategy=strategy, classes=np.arange(10), random_state=seed
    )
    learner.fit(X_train[labeled], y_train[labeled])
    scores = [learner.score(X_test, y_test)]
    for _ in range(n_rounds):
        picked = learner.query(X_train[pool], n=query_size)
        chosen = pool[picked]  # only now are these labels revealed
        learner.teach(X_train[chosen], y_train[chosen])
        pool = np.delete(pool, picked)
        scores.append(learner.score(X_test, y_test))
    return scores


def plot_curves(n_labeled, results, n_seeds):
    """Learning curves, mean ± std over seeds, one line per strategy."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, scores in results.items():
        mean, std = scores.mean(axis=0), scores.std(axis=0)
        ax.plot(n_labeled, mean, marker="o", markersize=3, label=name)
        ax.fill_between(n_labeled, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("labelled samples")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Digits, SmallCNN: mean ± std over {n_seeds} seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Uncertainty sampling vs random sampling on digits"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-initial", type=int, default=30)
    parser.add_argument("--query-size", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel simulations")
    parser.add_argument(
        "--save-figure", metavar="PATH", help="also save the learning curves there"
    )
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    tasks = [(s, seed) for s in STRATEGIES for seed in range(args.seeds)]
    curves = Parallel(n_jobs=args.n_jobs)(
        delayed(simulate)(
            s,
            X_train,
            y_train,
            X_test,
            y_test,
            seed=seed,
            n_initial=args.n_initial,
            query_size=args.query_size,
            n_rounds=args.rounds,
            max_epochs=args.max_epochs,
        )
        for s, seed in tasks
    )
    results = {
        s: np.array([c for (name, _), c in zip(tasks, curves) if name == s])
        for s in STRATEGIES
    }
    n_labeled = args.n_initial + args.query_size * np.arange(args.rounds + 1)
    print(f"Test accuracy on digits (SmallCNN), mean ± std over {args.seeds} seeds")
    header = f"{'labelled':>8}  " + "  ".join(f"{s:>16}" for s in STRATEGIES)
    print(header)
    print("-" * len(header))
    for r, n in enumerate(n_labeled):
        cells = [
            f"{results[s][:, r].mean():.3f} ± {results[s][:, r].std():.3f}"
            for s in STRATEGIES
        ]
        print(f"{n:>8}  " + "  ".join(f"{c:>16}" for c in cells))
    print("-" * len(header))
    means = [f"{results[s].mean():.3f}" for s in STRATEGIES]
    print(f"{'mean':>8}  " + "  ".join(f"{m:>16}" for m in means))
    fig = plot_curves(n_labeled, results, args.seeds)
    if args.save_figure:
        fig.savefig(args.save_figure, dpi=120)


if __name__ == "__main__":
    main()
