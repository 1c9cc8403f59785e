"""TiDAL paper Fig. 7: is the predicted training dynamics closer to the actual one?

Trains a ``skal.TiDALClassifier`` on a Fashion-MNIST subset and compares, on
its training samples, the actual training dynamics (the buffer: mean
training-pass softmax over the epochs, ``net.dynamics_``) with

- the head's predicted dynamics, ``predict_dynamics`` (eval mode), and
- the final snapshot probabilities, ``predict_proba`` (eval mode),

by the mean KL(actual || other). The paper's claim is that the first is
lower.

Usage::

    python benchmarks/tidal_fig7.py                      # TutorialCNN, CPU
    python benchmarks/tidal_fig7.py --model resnet18 --device cuda --n 10000
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import print_table  # noqa: E402

import skal  # noqa: E402
from skal.nets import ResNet18, TutorialCNN  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")


def load_fashion_mnist(path: Path):
    """The Fashion-MNIST training images (N, 1, 28, 28) in [0, 1] and labels."""
    images = path / "train-images-idx3-ubyte.gz"
    labels = path / "train-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise SystemExit(
            f"Fashion-MNIST not found under {path} (expected {images.name} and "
            f"{labels.name}); install it with `apt-get install "
            "dataset-fashion-mnist` or pass --data PATH"
        )
    with gzip.open(images) as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return X.astype(np.float32) / 255.0, y


def mean_kl(p, q):
    """Mean over rows of KL(p || q), float64, q clipped at 1e-12."""
    p = np.asarray(p, np.float64)
    q = np.clip(np.asarray(q, np.float64), 1e-12, None)
    terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0.0)
    return float(terms.sum(axis=1).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FASHION)
    parser.add_argument("--model", choices=["tutorial_cnn", "resnet18"])
    parser.add_argument("--n", type=int, default=2000, help="training samples")
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = args.model or "tutorial_cnn"
    X, y = load_fashion_mnist(args.data)
    idx = np.random.RandomState(args.seed).choice(len(y), args.n, replace=False)
    X, y = X[idx], y[idx]
    if model == "resnet18":
        module, taps = ResNet18, ["layer1", "layer2", "layer3", "layer4"]
        params = {"module__in_channels": 1}
    else:
        module, taps = TutorialCNN, ["conv1", "conv2", "fc1", "fc2"]
        params = {"module__in_channels": 1, "module__input_size": 28}
    rows = []
    for epochs in args.epochs:
        torch.manual_seed(args.seed)
        net = skal.TiDALClassifier(
            module,
            tidal_layers=taps,
            classes=list(range(10)),
            max_epochs=epochs,
            batch_size=128,
            device=args.device,
            **params,
        ).fit(X, y)
        actual = net.dynamics_
        rows.append(
            dict(
                model=model,
                n_train=args.n,
                epochs=epochs,
                train_acc=f"{np.mean(net.predict(X) == y):.3f}",
                kl_predicted=f"{mean_kl(actual, net.predict_dynamics(X)):.4f}",
                kl_snapshot=f"{mean_kl(actual, net.predict_proba(X)):.4f}",
            )
        )
    print("mean KL(actual training dynamics || .) on the training samples")
    print_table(
        rows,
        ["model", "n_train", "epochs", "train_acc", "kl_predicted", "kl_snapshot"],
    )


if __name__ == "__main__":
    main()
