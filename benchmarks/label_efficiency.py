"""Label efficiency of skal's strategies: AULC and final accuracy per data set.

Every registered strategy (:func:`skal.strategies.get_strategy_names`, so new
strategies are picked up), each with the network it needs (a
:class:`skal.TiDALClassifier` for ``tidal``, a :class:`skal.LLossClassifier`
for ``lloss``, a dropout network for ``bald``: the SmallCNN has dropout), plus
the ablations

- ``dynamic_al_g0``, ``dynamic_al_g1``, ``dynamic_al_ginf``: dynamicAL with
  γ = 0, 1, ∞ (``dynamic_al`` is the default γ = 2);
- ``tidal_margin``: TiDAL's margin score (``tidal`` is entropy),

on the same held-out split, seeds and initial labelled sets
(:func:`skal.model_selection.compare_strategies`), under two kinds of
training protocol:

- ``common``: one fixed training for every entry (Adam 3e-3, 20 epochs per
  round, batch 16, warm start);
- ``dynamic_al``: dynamicAL's protocol (:func:`skal.nets.dynamic_al_protocol`:
  Adam at a constant rate, here 3e-3 as in ``common``, between the paper's
  1e-3 and its code's 5e-3; each round trains until the training accuracy
  has been ≥ 0.97 for 10 epochs, at least k = 15 and at most 2k = 30
  epochs), for dynamicAL and the baselines the paper compares with;
- ``tidal``: TiDAL's protocol (:func:`skal.nets.tidal_protocol`: SGD 0.1,
  momentum 0.9, weight decay 5e-4, ×0.1 after 80 % of the epochs; λ = 1; a
  candidate subset of 10⁴, larger than these pools), for TiDAL, learning loss
  and the baselines.

The papers' epoch counts are for labelled sets of thousands; the labelled
sets here have tens to hundreds of samples, so the paper protocols keep the
optimizer, schedule and stopping rule with the epoch counts in ``DEFAULTS``;
dynamicAL's protocol uses batch 16 like ``common``, TiDAL's the paper's 128
(with batch 16, SGD at 0.1 with momentum drove the CNN to chance accuracy
within a few rounds).

Data sets (``--dataset``):

- ``digits``: scikit-learn's 8×8 digits, a stratified 70/30 split;
- ``fashion``: a stratified subsample of Fashion-MNIST's training images as
  the pool and of its test images as the test set;
- ``fashion-lt10``, ``fashion-lt100``: the same with a long-tailed pool
  (:func:`skal.datasets.make_long_tailed`, ρ = 10, 100) and a balanced test
  set.

Each (data set, protocol, entry) is saved as soon as it finishes to
``--out-dir/<dataset>/<protocol>/<entry>.json`` (scores per seed and round,
labelled rows, CPU seconds); a rerun skips what is saved, and what another
process is running (a ``.running`` marker next to it; delete stale markers
after an interruption), so several processes can share the work. ``--report`` reads the
saved results and prints Markdown tables (AULC and final accuracy, mean ± std
over seeds) and writes one learning-curve plot per data set and protocol.

More entries: add a builder to ``ENTRIES`` (name -> (strategy, network
kind)); a strategy registered with :func:`skal.strategies.register_strategy`
is included automatically with the plain network.

Usage::

    python benchmarks/label_efficiency.py --dataset digits --seeds 5
    python benchmarks/label_efficiency.py --dataset fashion --protocol common
    python benchmarks/label_efficiency.py --report --out-dir benchmarks/results/le
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

import skal
from skal.datasets import load_digits_images, load_fashion_mnist, make_long_tailed
from skal.model_selection import aulc, compare_strategies, plot_learning_curves
from skal.model_selection._simulation import INITIAL_MODES
from skal.nets import dynamic_al_protocol, tidal_protocol
from skal.strategies import DynamicAL, TiDAL, TypiClust, get_strategy_names

DATASETS = ("digits", "fashion", "fashion-lt10", "fashion-lt100")
PROTOCOLS = ("common", "dynamic_al", "tidal")
BASELINES = ("random", "entropy", "margin", "badge")
# entries beyond the registered strategies: name -> strategy object
ABLATIONS = {
    "dynamic_al_g0": lambda: DynamicAL(gamma=0.0),
    "dynamic_al_g1": lambda: DynamicAL(gamma=1.0),
    "dynamic_al_ginf": lambda: DynamicAL(gamma=float("inf")),
    "tidal_margin": lambda: TiDAL(score="margin"),
    "typiclust_raw": lambda: TypiClust(feature_extractor=raw_pixels),
}


def raw_pixels(X):
    """The images' pixels as features: TypiClust's user-given extractor."""
    X = np.asarray(X, dtype=np.float64)
    return X.reshape(len(X), -1)


# the network each entry needs (default: the plain one)
NET_KIND = {"tidal": "tidal", "tidal_margin": "tidal", "lloss": "lloss"}
# the entries each paper protocol runs: the method, its ablations and the
# baselines of the paper
PAPER_ENTRIES = {
    "dynamic_al": BASELINES + ("dynamic_al",),
    "tidal": BASELINES + ("tidal", "tidal_margin", "lloss"),
}
# per data set: pool, test, initial, per round, rounds, common epochs,
# dynamicAL min epochs (k), TiDAL epochs
SIZES = ("pool_size", "test_size", "n_initial", "query_size", "n_rounds")
SIZES += ("epochs", "dal_min_epochs", "tidal_epochs")
DEFAULTS = {
    "digits": (None, None, 20, 20, 8, 20, 15, 20),
    "fashion": (2000, 1000, 40, 40, 5, 20, 15, 20),
    "fashion-lt10": (2000, 1000, 40, 40, 5, 20, 15, 20),
    "fashion-lt100": (2000, 1000, 40, 40, 5, 20, 15, 20),
}
BATCH_SIZE = 16
LR = 3e-3  # Adam, common and dynamicAL protocols


def entry_names(protocol):
    """The entries a protocol runs, registered strategies first."""
    if protocol == "common":
        return get_strategy_names() + list(ABLATIONS)
    return list(PAPER_ENTRIES[protocol])


def make_learner(entry, protocol, args, module_kw):
    """The ActiveLearner of an entry: its strategy, the network it needs, and
    the protocol's training parameters."""
    strategy = ABLATIONS[entry]() if entry in ABLATIONS else entry
    kind = NET_KIND.get(entry, "plain")
    if protocol == "common":
        train = dict(lr=LR, max_epochs=args.epochs, batch_size=BATCH_SIZE)
    elif protocol == "dynamic_al":
        train = dynamic_al_protocol(
            lr=LR, batch_size=BATCH_SIZE, min_epochs=args.dal_min_epochs
        )
    else:
        # the paper's batch of 128: with batch 16, SGD at 0.1 with momentum
        # sent this BatchNorm-free CNN to chance accuracy within a few rounds
        train = tidal_protocol(max_epochs=args.tidal_epochs)
    net_kw = dict(module_kw, device=args.device, **train)
    layers = ["features.1", "features.3"]  # the two convolution blocks
    if kind == "tidal":
        net = skal.TiDALClassifier(skal.nets.SmallCNN, tidal_layers=layers, **net_kw)
    elif kind == "lloss":
        detach = round(0.6 * net_kw["max_epochs"])  # 120 of 200 in the paper
        net = skal.LLossClassifier(
            skal.nets.SmallCNN,
            lloss_layers=layers,
            lloss_detach_epoch=detach,
            **net_kw,
        )
    else:
        net = skal.NeuralNetClassifier(skal.nets.SmallCNN, **net_kw)
    return skal.ActiveLearner(net, strategy)


def load(name, args):
    """X, y, the held-out split (train, test) and the module's parameters."""
    if name == "digits":
        X, y = load_digits_images()
        train, test = train_test_split(
            np.arange(len(y)), test_size=0.3, stratify=y, random_state=0
        )
        return X, y, np.sort(train), np.sort(test), {"module__channels": 16}
    X_pool, y_pool = load_fashion_mnist(args.data, subset="train")
    X_test, y_test = load_fashion_mnist(args.data, subset="test")
    if name.startswith("fashion-lt"):
        rho = float(name[len("fashion-lt") :])
        X_pool, y_pool = make_long_tailed(X_pool, y_pool, rho, random_state=0)
    X_pool, y_pool = _subsample(X_pool, y_pool, args.pool_size)
    X_test, y_test = _subsample(X_test, y_test, args.test_size)
    X = np.concatenate([X_pool, X_test])
    y = np.concatenate([y_pool, y_test])
    train = np.arange(len(y_pool))
    test = np.arange(len(y_pool), len(y))
    return X, y, train, test, {"module__channels": 8, "module__hidden": 64}


def _subsample(X, y, size):
    """A stratified subsample (keeps the class proportions, long tail too)."""
    if size is None or size >= len(y):
        return X, y
    keep, _ = train_test_split(
        np.arange(len(y)), train_size=size, stratify=y, random_state=0
    )
    keep.sort()
    return X[keep], y[keep]


def run(name, args):
    defaults = dict(zip(SIZES, DEFAULTS[name]))
    for key in SIZES:
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    X, y, train, test, module_kw = load(name, args)
    counts = np.bincount(y[train])
    print(
        f"\n## {name}: pool {len(train)} (class sizes {counts.min()}..{counts.max()})"
        f", test {len(test)}, n_initial={args.n_initial}, query_size="
        f"{args.query_size}, n_rounds={args.n_rounds}, seeds={args.seeds}",
        flush=True,
    )
    for protocol in args.protocol:
        for entry in args.entry or entry_names(protocol):
            setting = protocol
            if args.initial != "random":
                setting = f"{protocol}-init-{args.initial}"
            path = Path(args.out_dir) / name / setting / f"{entry}.json"
            lock = path.with_suffix(".running")
            if path.exists() or lock.exists():
                continue  # done, or being run by another process
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.touch()
            learner = make_learner(entry, protocol, args, module_kw)
            start = time.process_time()
            result = compare_strategies(
                {entry: learner},
                X,
                y,
                errors="warn",
                cv=[(train, test)],
                n_initial=args.n_initial,
                query_size=args.query_size,
                n_rounds=args.n_rounds,
                n_seeds=args.seeds,
                initial=args.initial,
                random_state=args.random_state,
            )
            seconds = time.process_time() - start
            lock.unlink()
            if entry in result.skipped:
                print(f"{protocol:>10} {entry:<16} skipped: {result.skipped[entry]}")
                continue
            scores = result.scores[entry]
            areas = aulc(result.n_labeled, scores)
            print(
                f"{setting:>10} {entry:<16} AULC {areas.mean():.4f} ± "
                f"{areas.std():.4f}  final {scores[:, -1].mean():.4f} ± "
                f"{scores[:, -1].std():.4f}  ({seconds:.0f} CPU s)",
                flush=True,
            )
            record = {
                "dataset": name,
                "protocol": protocol,
                "entry": entry,
                "n_labeled": result.n_labeled.tolist(),
                "scores": scores.tolist(),
                "queried": result.queried[entry].tolist(),
                "cpu_seconds": seconds,
                "settings": {k: getattr(args, k) for k in SIZES + ("seeds", "initial")},
                "command": "python " + " ".join(sys.argv),
            }
            path.write_text(json.dumps(record))


def report(args):
    """Markdown tables and plots from the saved results."""
    out = Path(args.out_dir)
    for name in args.dataset:
        settings = [
            d.name
            for protocol in args.protocol
            for d in sorted((out / name).glob(f"{protocol}*"))
            if d.name == protocol or d.name.startswith(f"{protocol}-init-")
        ]
        for protocol in settings:
            records = [
                json.loads(p.read_text())
                for p in sorted((out / name / protocol).glob("*.json"))
            ]
            if not records:
                continue
            n_labeled = np.array(records[0]["n_labeled"])
            curves = {r["entry"]: np.array(r["scores"]) for r in records}
            rows = sorted(curves, key=lambda e: -aulc(n_labeled, curves[e]).mean())
            random_aulc = (
                aulc(n_labeled, curves["random"]).mean() if "random" in curves else None
            )
            seeds = {len(c) for c in curves.values()}
            print(
                f"\n### {name}, protocol: {protocol} "
                f"(seeds: {', '.join(map(str, sorted(seeds)))}; labels "
                f"{n_labeled[0]}..{n_labeled[-1]})\n"
            )
            print("| entry | AULC | final accuracy | Δ AULC vs random | CPU s |")
            print("|---|---|---|---|---|")
            for entry in rows:
                areas = aulc(n_labeled, curves[entry])
                final = curves[entry][:, -1]
                delta = (
                    "" if random_aulc is None else f"{areas.mean() - random_aulc:+.4f}"
                )
                seconds = next(r["cpu_seconds"] for r in records if r["entry"] == entry)
                print(
                    f"| {entry} | {areas.mean():.4f} ± {areas.std():.4f} | "
                    f"{final.mean():.4f} ± {final.std():.4f} | {delta} | "
                    f"{seconds:.0f} |"
                )
            if args.plot_dir:
                path = Path(args.plot_dir) / f"label_efficiency_{name}_{protocol}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                shown = [e for e in rows if e in _PLOTTED] or rows
                plot_learning_curves(
                    n_labeled,
                    {e: curves[e] for e in shown},
                    path,
                    title=f"{name}, {protocol} protocol: mean ± std over seeds",
                )


_PLOTTED = set(BASELINES) | {"dynamic_al", "tidal", "tidal_margin", "lloss"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", choices=DATASETS, default=DATASETS)
    parser.add_argument("--protocol", nargs="+", choices=PROTOCOLS, default=PROTOCOLS)
    parser.add_argument(
        "--entry",
        action="append",
        help="an entry (repeatable); default: every entry of the protocol",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--initial",
        choices=INITIAL_MODES,
        default="random",
        help="how the initial set is drawn (label-free methods: skal.coldstart); "
        "results go to <protocol>-init-<initial>",
    )
    parser.add_argument("--pool-size", type=int, help="subsample the pool to this")
    parser.add_argument("--test-size", type=int, help="subsample the test set")
    parser.add_argument("--n-initial", type=int)
    parser.add_argument("--query-size", type=int)
    parser.add_argument("--n-rounds", type=int)
    parser.add_argument("--epochs", type=int, help="epochs per round (common)")
    parser.add_argument("--dal-min-epochs", type=int, help="k of dynamicAL's rule")
    parser.add_argument("--tidal-epochs", type=int, help="epochs per round (TiDAL)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--data", help="Fashion-MNIST directory (default: Debian's)")
    parser.add_argument("--out-dir", default="benchmarks/results/label_efficiency")
    parser.add_argument("--report", action="store_true", help="tables from results")
    parser.add_argument("--plot-dir", help="with --report: write plots here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.report:
        report(args)
        return
    print("command: python " + " ".join(sys.argv), flush=True)
    for name in args.dataset:
        run(name, argparse.Namespace(**vars(args)))


if __name__ == "__main__":
    main()
