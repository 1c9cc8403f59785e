"""
dynamicAL vs entropy vs random sampling on digits
=================================================

An active-learning simulation on scikit-learn's 8x8 digits (shipped with
sklearn, no download) with a small CNN, comparing dynamicAL's training-dynamics
score for several values of ``gamma`` with entropy and random sampling:

- ``gamma=0``: gradient length ``‖g_x‖²`` only (expected gradient length);
- ``gamma=2``: ``‖g_x‖² + 2 g_xᵀ G_S``, the value dynamicAL's theory gives;
- ``gamma=inf``: the cross term ``g_xᵀ G_S`` only.

The training protocol is dynamicAL's: Adam at a constant learning rate, the
weights kept across rounds with a fresh optimizer each round
(:meth:`skal.ActiveLearner.teach`), and each round trained until the
training accuracy has stayed above 0.97 for a few epochs
(:class:`skal.nets.TrainUntilConvergence`), never looking at test data.
Test accuracy is printed after each round, averaged over the seeds.

Run it with ``python examples/plot_dynamic_al_digits.py`` (``--seeds 0 1 2``
for more seeds); one seed takes about 40 seconds on 2 CPU cores.
"""

import argparse
import math

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import skal
from skal.nets import TrainUntilConvergence
from skal.strategies import DynamicAL

STRATEGIES = {
    "random": "random",
    "entropy": "entropy",
    "dynamic_al gamma=0": DynamicAL(gamma=0.0),
    "dynamic_al gamma=2": DynamicAL(gamma=2.0),
    "dynamic_al gamma=inf": DynamicAL(gamma=math.inf),
}


def simulate(strategy, X_train, y_train, X_test, y_test, *, seed, args):
    """Test accuracy after the initial fit and after each query round."""
    torch.set_num_threads(1)  # small convolutions; simulations run in parallel
    rng = np.random.RandomState(seed)
    labeled = rng.choice(len(X_train), args.n_initial, replace=False)
    pool = np.setdiff1d(np.arange(len(X_train)), labeled)
    net = skal.NeuralNetClassifier(
        skal.nets.SmallCNN,
        module__channels=16,
        lr=3e-3,  # Adam, constant learning rate
        batch_size=64,
        max_epochs=args.max_epochs,
        callbacks=[TrainUntilConvergence(threshold=0.97, patience=3, min_epochs=3)],
    )
    learner = skal.ActiveLearner(
        net, strategy=strategy, classes=np.arange(10), random_state=seed
    )
    learner.fit(X_train[labeled], y_train[labeled])
    scores = [learner.score(X_test, y_test)]
    for _ in range(args.n_rounds):
        picked = learner.query(X_train[pool], n=args.query_size)
        chosen = pool[picked]  # only now are these labels revealed
        learner.teach(X_train[chosen], y_train[chosen])
        pool = np.delete(pool, picked)
        scores.append(learner.score(X_test, y_test))
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(description="dynamicAL on digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-initial", type=int, default=40)
    parser.add_argument("--query-size", type=int, default=40)
    parser.add_argument("--n-rounds", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 1, 8, 8)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    jobs = [(name, seed) for name in STRATEGIES for seed in args.seeds]
    results = Parallel(n_jobs=args.n_jobs)(
        delayed(simulate)(
            STRATEGIES[name], X_train, y_train, X_test, y_test, seed=seed, args=args
        )
        for name, seed in jobs
    )
    scores = {name: [] for name in STRATEGIES}
    for (name, _), curve in zip(jobs, results):
        scores[name].append(curve)
    n_labeled = args.n_initial + args.query_size * np.arange(args.n_rounds + 1)
    print(f"test accuracy, mean over seeds {args.seeds}")
    print(f"{'labelled':>22s} " + " ".join(f"{n:>6d}" for n in n_labeled))
    for name, curves in scores.items():
        mean = np.mean(curves, axis=0)
        print(f"{name:>22s} " + " ".join(f"{a:6.3f}" for a in mean))


if __name__ == "__main__":
    main()
