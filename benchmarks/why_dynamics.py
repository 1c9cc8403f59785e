"""When do dynamicAL and TiDAL help? Training-side diagnostics.

Nothing here reads the test set. The quantities are computed on the labelled
set S, on the pool, and on the labels of pool samples (the pool is part of the
training data; an analysis may read its labels, the strategies never do).

``--study dynamic_al``: an active-learning run with the ``dynamic_al``
strategy (the common protocol of ``label_efficiency.py``); at every round,
before querying, over the whole pool (eval mode, argmax pseudo-labels):

- the norm term ``‖g_x‖²`` and the cross term ``2 g_xᵀ G_S`` of Δ(x) (mean of
  their absolute values over the pool, and their ratio) as |S| grows;
- for the batches that γ = 0, 2, ∞, entropy and random sampling would query:
  the approximation ratio R(Q|S) (:func:`skal.ntk.approximation_ratio`), the
  accuracy of the pseudo-labels of Q (against the pool labels), the mean
  pairwise cosine similarity of the per-sample pseudo-label gradients inside
  Q (redundancy), the number of classes Q covers, the share of Q from the
  rarer half of the classes (long tail), and the accuracy of the current
  model on the pool;
- the Spearman correlation between the γ = 2 and γ = 0 rankings.

``--study tidal``: a :class:`skal.TiDALClassifier` trained on labelled sets of
two sizes, with λ ∈ {0, 0.1, 1, 3}: the KL of the head's predicted dynamics
and of the snapshot probabilities to the actual dynamics of the pool samples
(their softmax averaged over the epochs of the fit, eval mode, never trained
on), and the classifier's accuracy on the pool (what the head's joint
training does to the classifier). λ = 0 is the plain network with an
untrained head.

Results go to ``--out`` as JSON and are printed as Markdown tables.

Usage::

    python benchmarks/why_dynamics.py --study dynamic_al --dataset fashion-lt100
    python benchmarks/why_dynamics.py --study tidal --dataset fashion
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from skorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))

import label_efficiency as le  # noqa: E402

from skal._utils import eval_mode, logits_of  # noqa: E402
from skal.gradients import PerSampleGradients, sum_gradient  # noqa: E402
from skal.model_selection._simulation import initial_indices  # noqa: E402
from skal.ntk import approximation_ratio  # noqa: E402

BATCHES = ("dynamic_al_g0", "dynamic_al", "dynamic_al_ginf", "entropy", "random")


def _tensor(net, X):
    return torch.as_tensor(np.asarray(X, dtype=np.float32), device=net.device)


def pool_terms(net, X_lab, y_lab, X_pool):
    """Per pool sample: ‖g_x‖², g_xᵀ G_S, pseudo-label and softmax."""
    module = net.module_
    with eval_mode(module):
        xs, ys = _tensor(net, X_lab), torch.as_tensor(y_lab).long()
        g_s = sum_gradient(
            module, [(xs[i : i + 256], ys[i : i + 256]) for i in range(0, len(xs), 256)]
        )
        engine = PerSampleGradients(module)
        sq, dots, logits = [], [], []
        xp = _tensor(net, X_pool)
        for i in range(0, len(xp), 256):
            stats = engine.stats(xp[i : i + 256], lambda z: z.argmax(1), vector=g_s)
            sq.append(stats.sq_norms.double())
            dots.append(stats.dots.double())
            logits.append(stats.logits)
    logits = torch.cat(logits)
    return (
        torch.cat(sq).numpy(),
        torch.cat(dots).numpy(),
        logits.argmax(1).numpy(),
        torch.softmax(logits.double(), 1).numpy(),
    )


def gradient_cosines(net, X, labels):
    """Mean pairwise cosine similarity of per-sample gradients (pseudo-labels)."""
    module = net.module_
    params = [p for p in module.parameters() if p.requires_grad]
    rows = []
    with eval_mode(module), torch.enable_grad():
        x = _tensor(net, X)
        for i in range(len(x)):
            loss = torch.nn.functional.cross_entropy(
                logits_of(module(x[i : i + 1])), torch.as_tensor(labels[i : i + 1])
            )
            g = torch.autograd.grad(loss, params)
            rows.append(torch.cat([t.reshape(-1) for t in g]).double())
    G = torch.stack(rows)
    G = G / G.norm(dim=1, keepdim=True).clamp_min(1e-30)
    C = (G @ G.T).numpy()
    n = len(C)
    return float((C.sum() - np.trace(C)) / (n * (n - 1)))


def dynamic_al_study(name, args, X, y, train, module_kw, seed):
    rng = np.random.RandomState(seed)
    learner = le.make_learner("dynamic_al", "common", args, module_kw)
    learner.set_params(random_state=seed, classes=np.unique(y))
    labelled = train[initial_indices(y[train], args.n_initial, "random", rng)]
    learner.fit(X[labelled], y[labelled])
    counts = np.bincount(y[train], minlength=len(np.unique(y)))
    rare = np.argsort(counts)[: len(counts) // 2]
    rows = []
    for round_ in range(args.n_rounds):
        pool = np.setdiff1d(train, labelled)
        net = learner.estimator_
        sq, dots, pseudo, proba = pool_terms(net, X[labelled], y[labelled], X[pool])
        b = args.query_size
        entropy = -(proba * np.log(np.clip(proba, 1e-300, None))).sum(1)
        picks = {
            "dynamic_al_g0": np.argsort(-sq)[:b],
            "dynamic_al": np.argsort(-(sq + 2 * dots))[:b],
            "dynamic_al_ginf": np.argsort(-dots)[:b],
            "entropy": np.argsort(-entropy)[:b],
            "random": rng.choice(len(pool), b, replace=False),
        }
        row = {
            "round": round_,
            "n_labeled": len(labelled),
            "norm_term": float(np.abs(sq).mean()),
            "cross_term": float(np.abs(2 * dots).mean()),
            "pool_accuracy": float((pseudo == y[pool]).mean()),
            "spearman_g2_g0": float(spearmanr(sq + 2 * dots, sq)[0]),
        }
        for key, idx in picks.items():
            rows_q = pool[idx]
            row[f"{key}/pseudo_acc"] = float((pseudo[idx] == y[rows_q]).mean())
            row[f"{key}/cosine"] = gradient_cosines(net, X[rows_q], pseudo[idx])
            row[f"{key}/classes"] = int(len(np.unique(y[rows_q])))
            row[f"{key}/rare_share"] = float(np.isin(y[rows_q], rare).mean())
            row[f"{key}/ratio"] = approximation_ratio(
                net.module_, X[labelled], y[labelled], X[rows_q]
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
        chosen = pool[picks["dynamic_al"]]
        learner.teach(X[chosen], y[chosen])
        labelled = np.concatenate([labelled, chosen])
    return rows


class PoolDynamics(Callback):
    """Average the pool's softmax (eval mode) over the epochs of each fit."""

    def __init__(self, X_pool):
        self.X_pool = X_pool

    def on_train_begin(self, net, **kwargs):
        self.sum_, self.n_ = 0.0, 0

    def on_epoch_end(self, net, **kwargs):
        self.sum_ = self.sum_ + net.predict_proba(self.X_pool)
        self.n_ += 1

    @property
    def dynamics_(self):
        return self.sum_ / self.n_


def _kl(p, q):
    p = np.clip(p, 1e-12, None)
    q = np.clip(q, 1e-12, None)
    return float((p * (np.log(p) - np.log(q))).sum(1).mean())


def tidal_study(name, args, X, y, train, module_kw, seed):
    rows = []
    rng = np.random.RandomState(seed)
    for size in (args.n_initial, args.n_initial + args.n_rounds * args.query_size):
        labelled = train[initial_indices(y[train], size, "random", rng)]
        pool = np.setdiff1d(train, labelled)
        for lam in (0.0, 0.1, 1.0, 3.0):
            tracker = PoolDynamics(X[pool])
            learner = le.make_learner("tidal", "common", args, module_kw)
            learner.set_params(
                random_state=seed,
                classes=np.unique(y),
                estimator__tidal_lambda=lam,
                estimator__callbacks=[("pool_dynamics", tracker)],
            )
            learner.fit(X[labelled], y[labelled])
            net = learner.estimator_
            actual = dict(net.callbacks_)["pool_dynamics"].dynamics_
            head = net.predict_dynamics(X[pool])
            snapshot = net.predict_proba(X[pool])
            row = {
                "n_labeled": size,
                "lambda": lam,
                "kl_head": _kl(actual, head),
                "kl_snapshot": _kl(actual, snapshot),
                "pool_accuracy": float((snapshot.argmax(1) == y[pool]).mean()),
                "train_accuracy": float(
                    (net.predict_proba(X[labelled]).argmax(1) == y[labelled]).mean()
                ),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def report(path):
    """Markdown tables, mean (± std) over seeds, from a saved study."""
    runs = list(json.loads(Path(path).read_text()).values())
    print(f"\n### {Path(path).stem} ({len(runs)} seeds)\n")

    def cell(values):
        values = np.asarray(values, dtype=float)
        return f"{values.mean():.2f} ± {values.std():.2f}"

    if "lambda" in runs[0][0]:
        keys = ("kl_head", "kl_snapshot", "pool_accuracy", "train_accuracy")
        print("| labelled | λ | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 2) + "|")
        for i, row in enumerate(runs[0]):
            cells = [cell([run[i][k] for run in runs]) for k in keys]
            head = f"| {row['n_labeled']} | {row['lambda']} | "
            print(head + " | ".join(cells) + " |")
        return
    print("| labelled | norm term | cross term | pool accuracy | ρ(γ=2, γ=0) |")
    print("|---|---|---|---|---|")
    for i, row in enumerate(runs[0]):
        cells = [
            cell([run[i][k] for run in runs])
            for k in ("norm_term", "cross_term", "pool_accuracy", "spearman_g2_g0")
        ]
        print(f"| {row['n_labeled']} | " + " | ".join(cells) + " |")
    for metric in ("ratio", "pseudo_acc", "cosine", "classes", "rare_share"):
        print(f"\n{metric} of the queried batch Q, per round:\n")
        print("| labelled | " + " | ".join(BATCHES) + " |")
        print("|---" * (len(BATCHES) + 1) + "|")
        for i, row in enumerate(runs[0]):
            cells = [cell([run[i][f"{b}/{metric}"] for run in runs]) for b in BATCHES]
            print(f"| {row['n_labeled']} | " + " | ".join(cells) + " |")
        means = [
            cell([np.mean([r[f"{b}/{metric}"] for r in run]) for run in runs])
            for b in BATCHES
        ]
        print("| all rounds | " + " | ".join(means) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", metavar="JSON", help="tables from a saved study")
    parser.add_argument("--study", choices=("dynamic_al", "tidal"))
    parser.add_argument("--dataset", choices=le.DATASETS, default="fashion")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results/why")
    parser.add_argument("--data", help="Fashion-MNIST directory (default: Debian's)")
    args = parser.parse_args(argv)
    if args.report:
        report(args.report)
        return
    if args.study is None:
        parser.error("--study is required (or --report)")
    torch.set_num_threads(1)
    defaults = dict(zip(le.SIZES, le.DEFAULTS[args.dataset]))
    sizes = argparse.Namespace(device="cpu", data=args.data, **defaults)
    X, y, train, _, module_kw = le.load(args.dataset, sizes)
    study = dynamic_al_study if args.study == "dynamic_al" else tidal_study
    print("command: python " + " ".join(sys.argv), flush=True)
    results = {}
    for seed in args.seeds:
        results[seed] = study(args.dataset, sizes, X, y, train, module_kw, seed)
        path = Path(args.out) / f"{args.study}_{args.dataset}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
