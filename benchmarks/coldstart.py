"""Label-free first batches: classes covered and accuracy after the first fit.

For each data set, embedding and method of :func:`skal.coldstart.select_label_free`,
and seed: the first batch of ``n`` rows is picked without labels, then the
SmallCNN of ``benchmarks/label_efficiency.py`` (common protocol: Adam 3e-3,
batch 16, 20 epochs) is trained on it and scored on the test set. Two
embeddings: the untrained SmallCNN's penultimate embedding (what a session
or a simulation uses before any label) and the raw pixels (a user-given
feature extractor). Printed: classes covered by the batch and test accuracy,
mean ± std over seeds.

Usage::

    python benchmarks/coldstart.py --seeds 5
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from label_efficiency import load

import skal
from skal.coldstart import LABEL_FREE_METHODS, select_label_free

SIZES = {"digits": 20, "fashion": 40}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", choices=tuple(SIZES), default=SIZES)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data", help="Fashion-MNIST directory (default: Debian's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("command: python " + " ".join(sys.argv), flush=True)
    for name in args.dataset:
        ns = argparse.Namespace(pool_size=2000, test_size=1000, data=args.data)
        X, y, train, test, module_kw = load(name, ns)
        n = SIZES[name]
        print(f"\n### {name}: pool {len(train)}, first batch of {n}\n")
        print("| embedding | method | classes covered | test accuracy |")
        print("|---|---|---|---|")
        X_pool = X[train]
        for embedding in ("untrained SmallCNN", "raw pixels"):
            for method in LABEL_FREE_METHODS:
                if method == "random" and embedding == "raw pixels":
                    continue  # no embedding: the same rows as above
                covered, accuracy = [], []
                for seed in range(args.seeds):
                    net = skal.NeuralNetClassifier(
                        skal.nets.SmallCNN,
                        lr=3e-3,
                        max_epochs=args.epochs,
                        batch_size=16,
                        **module_kw,
                    )
                    learner = skal.ActiveLearner(
                        net, classes=np.unique(y), random_state=seed
                    )
                    features = None
                    if embedding == "raw pixels":
                        features = X_pool.reshape(len(X_pool), -1)
                    picks = train[
                        select_label_free(
                            learner,
                            X_pool,
                            n,
                            method=method,
                            random_state=seed,
                            embedding=features,
                        )
                    ]
                    covered.append(len(np.unique(y[picks])))
                    learner.fit(X[picks], y[picks])
                    accuracy.append(learner.score(X[test], y[test]))
                print(
                    f"| {embedding} | {method} | {np.mean(covered):.1f} ± "
                    f"{np.std(covered):.1f} | {np.mean(accuracy):.4f} ± "
                    f"{np.std(accuracy):.4f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
