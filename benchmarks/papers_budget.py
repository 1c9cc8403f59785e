"""dynamicAL and TiDAL at the papers' budgets on the full Fashion-MNIST.

The label-efficiency study (``label_efficiency.py``) runs at tens to hundreds
of labels on pools of 2,000 images. This study runs at the budgets of the two
papers: the whole 60,000-image training set as the pool (balanced, or made
long-tailed with ρ = 10 and ρ = 100 by :func:`skal.datasets.make_long_tailed`),
the 10,000 test images as the test set, and each paper's protocol:

- ``dynamic_al`` (Wang et al., NeurIPS 2022, "Deep Active Learning by
  Leveraging Training Dynamics"): 500 initial labels, 500 per round, 9
  rounds, the network kept across rounds (warm start), each round trained
  "until convergence" (:func:`skal.nets.dynamic_al_protocol`: Adam at the
  paper's constant 1e-3, batch 128, stop once the training accuracy has been
  >= 0.97 for ``patience`` epochs, after at least k and at most 2k epochs).
  Entries: dynamicAL (γ = 2 and γ = 0), random, entropy, margin, BADGE,
  core-set.
- ``tidal_warm`` and ``tidal_scratch`` (Kye et al., ICCV 2023, "TiDAL:
  Learning Training Dynamics for Active Learning"): initial = per-cycle =
  1,000 labels (balanced pool) or 500 (long-tailed pools), 9 cycles after
  the initial one, a random candidate subset of 10,000 pool images per cycle
  for every entry, SGD 0.1 with momentum 0.9 and weight decay 5e-4, batch
  128, the rate ×0.1 after 80 % of the epochs (:func:`skal.nets.
  tidal_protocol`). ``tidal_warm`` keeps the network across cycles (the
  official code); ``tidal_scratch`` re-initialises it each cycle (the
  paper's text, ``ActiveLearner(warm_start=False)``). Entries: TiDAL
  (entropy and margin), random, entropy, margin, BALD, core-set, learning
  loss.

A cell is one (set-up, pool, seed, entry). Every cell is one
:func:`skal.model_selection.active_learning_curve` call with a checkpoint
directory, so an interrupted cell resumes at its last completed round; a
finished cell is saved as ``<root>/results/<setup>/<pool>/<entry>/seed<k>.json``
(scores per round, labelled rows in order, CPU seconds, training-side
diagnostics) and skipped by later runs. The root (``--root``, default
``~/.cache/skal/papers_budget``, or ``papers_budget_paper`` with
``--paper``) lives outside the source tree. A lock per cell (``fcntl``,
released when its process dies) lets several processes share the work.
Seeds are paired: seed k gives every entry of a set-up and pool the same
initial labelled set.

CPU scale (the default): the network (the PyTorch tutorial CNN that the
dynamicAL paper uses, with BatchNorm after each convolution), the epochs and
the dynamicAL set-up's candidates are cut to fit the whole study into about
three CPU-hours; the ``SCALES`` table holds them and ``docs/papers_budget.md``
lists every departure from the papers. ``--paper`` takes the papers'
settings (ResNet-18; TiDAL 100 epochs per cycle on Fashion-MNIST with random
crops and flips; dynamicAL's convergence rule with k = 10, patience 10,
2k = 20, scoring the whole pool) for a GPU (``--device cuda``), and
``--dataset cifar10 --data DIR`` reads CIFAR-10's python batches from a
local folder (nothing is downloaded; TiDAL's 200 epochs there).
``--tidal-epochs`` and ``--dal-min-epochs`` change a scale for a trial
(with a ``--root`` of its own).

Results written by one version of this script are not mixed with another's:
a cell whose checkpoint was written by other code (skal's or this script's
fingerprinted classes and functions) starts again from its first round.

Each evaluation after a round also records, with the test accuracy, what the
model does on its own labelled set S (training accuracy: the fit of S) and
how redundant the batch it queried last was (mean pairwise cosine of the
per-sample gradients of the queried samples against their pseudo-labels,
under the model that queried them, over all the network's parameters); the
tail share of the batches comes from the labelled rows in the result.

Usage::

    # the study, resumable; cells in priority order
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/papers_budget.py
    # some cells only
    python benchmarks/papers_budget.py --setup dynamic_al --pool balanced --seed 0
    python benchmarks/papers_budget.py --slice 0/2   # every other cell
    python benchmarks/papers_budget.py --list        # cells and their state
    # tables and plots from whatever has finished
    python benchmarks/papers_budget.py --report --plot-dir docs/images
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import skal
from skal._utils import eval_mode, logits_of
from skal.datasets import load_fashion_mnist, make_long_tailed
from skal.model_selection import CheckpointError, active_learning_curve, aulc
from skal.nets import ResNet18, TutorialCNN, dynamic_al_protocol, tidal_protocol
from skal.strategies import DynamicAL, TiDAL

SETUPS = ("dynamic_al", "tidal_warm", "tidal_scratch")
POOLS = ("balanced", "lt100", "lt10")  # priority order
RHO = {"balanced": None, "lt10": 10.0, "lt100": 100.0}
# entries in priority order: each paper's method and random first
ENTRIES = {
    "dynamic_al": (
        "dynamic_al", "random", "margin", "dynamic_al_g0", "badge", "entropy",
        "coreset",
    ),
    "tidal_warm": (
        "tidal", "random", "entropy", "tidal_margin", "margin", "bald", "coreset",
        "lloss",
    ),
}  # fmt: skip
ENTRIES["tidal_scratch"] = ENTRIES["tidal_warm"]
STRATEGIES = {
    "dynamic_al_g0": lambda: DynamicAL(gamma=0.0),
    "tidal_margin": lambda: TiDAL(score="margin"),
}
NET_KIND = {"tidal": "tidal", "tidal_margin": "tidal", "lloss": "lloss"}
N_ROUNDS = 9  # after the initial set: 10 points on each curve, as the papers
# labelled sets: (initial, per round) per set-up and pool kind
BUDGETS = {
    "dynamic_al": {"balanced": (500, 500), "lt": (500, 500)},
    "tidal": {"balanced": (1000, 1000), "lt": (500, 500)},
}
# what each scale trains: backbone, dynamicAL's k, TiDAL's epochs per
# cycle, the candidate subset of the dynamicAL set-up (None: the whole pool)
SCALES = {
    "cpu": {
        "backbone": "bn_tutorial_cnn",
        "dal_min_epochs": 5,
        "dal_patience": 3,
        "tidal_epochs": 5,
        "dal_subset": 10_000,
        "augment": False,
    },
    "paper": {
        "backbone": "resnet18",
        "dal_min_epochs": 10,
        "dal_patience": 10,
        "tidal_epochs": {"fashion": 100, "cifar10": 200},
        "dal_subset": None,
        "augment": True,
    },
}
TIDAL_SUBSET = 10_000
DAL_LR = 1e-3  # the paper's constant rate (its code: 5e-3)
BALD_DROPOUT = 0.25
N_SEEDS = 3
COSINE_SAMPLES = 128  # batch samples the redundancy is measured on


# ------------------------------------------------------------------ networks
class BNTutorialCNN(TutorialCNN):
    """The tutorial CNN with BatchNorm after each convolution (and optional
    dropout before its last layer, for BALD's MC dropout)."""

    def __init__(self, in_channels=1, num_classes=10, input_size=28, dropout=0.0):
        super().__init__(in_channels, num_classes, input_size)
        self.bn1 = nn.BatchNorm2d(self.conv1.out_channels)
        self.bn2 = nn.BatchNorm2d(self.conv2.out_channels)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.relu(self.bn2(self.conv2(x))))
        x = self.relu(self.fc1(x.flatten(1)))
        x = self.dropout(self.relu(self.fc2(x)))
        return self.fc3(x)


class DropoutResNet18(ResNet18):
    """ResNet-18 with dropout before its classifier, for BALD's MC dropout."""

    def __init__(self, in_channels=3, num_classes=10, dropout=0.25):
        super().__init__(in_channels, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.dropout(self.avgpool(out).flatten(1)))


def module_of(backbone, entry, in_channels, side):
    """The module class and its parameters for an entry."""
    bald = entry == "bald"
    if backbone == "bn_tutorial_cnn":
        kw = {"module__in_channels": in_channels, "module__input_size": side}
        if bald:
            kw["module__dropout"] = BALD_DROPOUT
        return BNTutorialCNN, kw
    kw = {"module__in_channels": in_channels}
    if bald:
        return DropoutResNet18, {**kw, "module__dropout": BALD_DROPOUT}
    return ResNet18, kw


def tapped_layers(backbone):
    """The layers TiDAL's and learning loss's heads read (ResNet: its stages)."""
    if backbone == "bn_tutorial_cnn":
        return ["conv1", "conv2", "fc1", "fc2"]
    return None  # layer1 .. layer4


def make_learner(setup, entry, args, data):
    """The ActiveLearner of one entry under one set-up."""
    scale = args.scale
    module, module_kw = module_of(
        scale["backbone"], entry, data["channels"], data["side"]
    )
    strategy = STRATEGIES[entry]() if entry in STRATEGIES else entry
    if setup == "dynamic_al":
        k = scale["dal_min_epochs"]
        train = dynamic_al_protocol(
            lr=DAL_LR, batch_size=128, min_epochs=k, patience=scale["dal_patience"]
        )
        subset, warm = scale["dal_subset"], True
    else:
        train = tidal_protocol(max_epochs=data["tidal_epochs"])
        subset, warm = TIDAL_SUBSET, setup == "tidal_warm"
        if scale["augment"]:
            # TiDAL's code: random crop (padding 4) and horizontal flip
            from torchvision.transforms import v2

            side = data["side"]
            train["train_transform"] = v2.Compose(
                [v2.RandomCrop(side, padding=4), v2.RandomHorizontalFlip()]
            )
    net_kw = dict(module_kw, device=args.device, inference_batch_size=1024, **train)
    kind = NET_KIND.get(entry, "plain")
    layers = tapped_layers(scale["backbone"])
    if kind == "tidal":
        net = skal.TiDALClassifier(module, tidal_layers=layers, **net_kw)
    elif kind == "lloss":
        # learning loss stops its loss from reaching the backbone after 60 %
        # of the epochs (120 of 200 in its paper)
        detach = max(1, round(0.6 * net_kw["max_epochs"]))
        net = skal.LLossClassifier(
            module, lloss_layers=layers, lloss_detach_epoch=detach, **net_kw
        )
    else:
        net = skal.NeuralNetClassifier(module, **net_kw)
    return skal.ActiveLearner(net, strategy, subset_size=subset, warm_start=warm)


# ---------------------------------------------------------------------- data
_DATA_CACHE: dict = {}


def load_pool(pool, args):
    """X (pool then test), y, the pool rows, the test rows, image geometry."""
    key = (args.dataset, pool)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    if args.dataset == "fashion":
        X_pool, y_pool = load_fashion_mnist(args.data, subset="train")
        X_test, y_test = load_fashion_mnist(args.data, subset="test")
    else:
        X_pool, y_pool, X_test, y_test = load_cifar10(args.data)
    if RHO[pool] is not None:
        X_pool, y_pool = make_long_tailed(X_pool, y_pool, RHO[pool], random_state=0)
    X = np.concatenate([X_pool, X_test])
    y = np.concatenate([y_pool, y_test])
    epochs = args.scale["tidal_epochs"]
    data = {
        "X": X,
        "y": y,
        "train": np.arange(len(y_pool)),
        "test": np.arange(len(y_pool), len(y)),
        "channels": X.shape[1],
        "side": X.shape[2],
        "tidal_epochs": epochs[args.dataset] if isinstance(epochs, dict) else epochs,
    }
    _DATA_CACHE.clear()  # one pool in memory at a time
    _DATA_CACHE[key] = data
    return data


def load_cifar10(path):
    """CIFAR-10 from the python batches in a local folder (never downloaded)."""
    if path is None:
        raise ValueError("--dataset cifar10 needs --data, a folder with CIFAR-10")
    from torchvision.datasets import CIFAR10

    parts = []
    for train in (True, False):
        ds = CIFAR10(str(path), train=train, download=False)
        X = np.asarray(ds.data, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0
        parts += [X, np.asarray(ds.targets, dtype=np.int64)]
    return tuple(parts)


# ----------------------------------------------------------- diagnostics
class _Cell:
    """The cell now running: its files, CPU clock and the previous round's model."""

    current = None

    def __init__(self, paths, cpu_before):
        self.paths = paths
        self.cpu_before = cpu_before
        self.start = time.process_time()
        self.diag_cpu = 0.0
        self.previous = None  # (n_labeled, the weights that queried next)

    def cpu(self):
        return self.cpu_before + time.process_time() - self.start


def _batch_cosine(module, X, device, n_max=COSINE_SAMPLES):
    """Mean pairwise cosine of per-sample pseudo-label gradients (all
    parameters), over at most ``n_max`` samples of the batch (a fixed draw)."""
    if len(X) > n_max:
        X = X[np.random.RandomState(len(X)).choice(len(X), n_max, replace=False)]
    params = [p for p in module.parameters() if p.requires_grad]
    rows = []
    with eval_mode(module), torch.enable_grad():
        x = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
        for i in range(len(x)):
            logits = logits_of(module(x[i : i + 1]))
            loss = nn.functional.cross_entropy(logits, logits.argmax(1).detach())
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            rows.append(
                torch.cat([g.reshape(-1) for g in grads if g is not None]).double()
            )
    G = torch.stack(rows)
    G = G / G.norm(dim=1, keepdim=True).clamp_min(1e-30)
    C = (G @ G.T).cpu().numpy()
    n = len(C)
    return float((C.sum() - np.trace(C)) / (n * (n - 1)))


def accuracy_and_diagnostics(learner, X, y):
    """The test accuracy; records the fit of S and the last batch's redundancy.

    Used as the simulations' ``scoring``: it runs after the initial fit and
    after every round. What it records goes to the running cell's diagnostics
    file (nothing if no cell runs).
    """
    accuracy = float(learner.score(X, y))
    cell = _Cell.current
    if cell is None:
        return accuracy
    start = time.process_time()
    net = learner.estimator_
    X_lab, y_lab = learner.X_labeled_, learner.y_labeled_
    n = len(y_lab)
    record = {
        "n_labeled": n,
        "test_accuracy": accuracy,
        "train_accuracy": float(np.mean(learner.predict(X_lab) == y_lab)),
        "epochs": len(net.history),
    }
    module = net.module_
    if cell.previous is not None and cell.previous[0] < n:
        # the batch queried last, under the weights that queried it
        current = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(cell.previous[1])
        try:
            batch = X_lab[cell.previous[0] :]
            record["batch_cosine"] = _batch_cosine(module, batch, net.device)
        finally:
            module.load_state_dict(current)
    # the weights that query the next batch, to score that batch later
    cell.previous = (
        n,
        {k: v.detach().clone() for k, v in module.state_dict().items()},
    )
    cell.diag_cpu += time.process_time() - start
    record["diag_cpu_seconds"] = cell.diag_cpu
    with open(cell.paths["diag"], "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return accuracy


# -------------------------------------------------------------------- cells
def all_cells(args):
    """Every (setup, pool, entry, seed) in priority order: pool by pool
    (balanced, ρ = 100, ρ = 10); within a pool, two entries of each set-up
    in turn (the dynamicAL set-up first; each set-up's method and random
    first), each entry's seeds together."""
    cells = []
    for pool in POOLS:
        longest = max(len(ENTRIES[s]) for s in SETUPS)
        for start in range(0, longest, 2):
            for setup in SETUPS:
                for entry in ENTRIES[setup][start : start + 2]:
                    for seed in range(args.seeds):
                        cells.append((setup, pool, entry, seed))
    return cells


def selected_cells(args):
    cells = [
        c
        for c in all_cells(args)
        if (not args.setup or c[0] in args.setup)
        and (not args.pool or c[1] in args.pool)
        and (not args.entry or c[2] in args.entry)
        and (args.seed is None or c[3] in args.seed)
    ]
    if args.slice:
        k, n = args.slice
        cells = cells[k::n]
    return cells


def cell_paths(root, setup, pool, entry, seed):
    base = Path(root)
    name = f"{setup}/{pool}/{entry}/seed{seed}"
    return {
        "result": base / "results" / f"{name}.json",
        "diag": base / "results" / f"{name}.diag.jsonl",
        "cpu": base / "results" / f"{name}.cpu",
        "lock": base / "results" / f"{name}.lock",
        "checkpoint": base / "checkpoints" / name,
    }


def budget(setup, pool):
    kind = "balanced" if pool == "balanced" else "lt"
    return BUDGETS["dynamic_al" if setup == "dynamic_al" else "tidal"][kind]


@contextlib.contextmanager
def cpu_ticker(cell, every=30.0):
    """Writes the cell's CPU seconds so far every ``every`` seconds, so that an
    interrupted sitting's CPU time is counted when the cell resumes."""
    stop = threading.Event()

    def tick():
        while not stop.wait(every):
            cell.paths["cpu"].write_text(f"{cell.cpu():.1f}")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        cell.paths["cpu"].write_text(f"{cell.cpu():.1f}")


def run_cell(setup, pool, entry, seed, args):
    paths = cell_paths(args.root, setup, pool, entry, seed)
    if paths["result"].exists():
        return "done"
    paths["result"].parent.mkdir(parents=True, exist_ok=True)
    lock = open(paths["lock"], "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return "running elsewhere"
    try:
        if paths["result"].exists():
            return "done"
        data = load_pool(pool, args)
        n_initial, query_size = budget(setup, pool)
        learner = make_learner(setup, entry, args, data)
        cpu_before = float(paths["cpu"].read_text()) if paths["cpu"].exists() else 0.0
        cell = _Cell(paths, cpu_before)
        _Cell.current = cell
        print(
            f"[{time.strftime('%H:%M:%S')}] {setup} {pool} {entry} seed {seed}: "
            f"start (CPU so far {cpu_before:.0f} s)",
            flush=True,
        )
        curve = dict(
            cv=[(data["train"], data["test"])],
            n_initial=n_initial,
            query_size=query_size,
            n_rounds=args.n_rounds,
            n_seeds=1,
            scoring=accuracy_and_diagnostics,
            random_state=args.random_state + seed,
            checkpoint_dir=paths["checkpoint"],
            return_queried=True,
        )
        with cpu_ticker(cell):
            try:
                n_labeled, scores, queried = active_learning_curve(
                    learner, data["X"], data["y"], **curve
                )
            except CheckpointError as exc:
                # the code changed since this cell's checkpoint was written
                # (skal or this script): its rounds are run again, never mixed
                print(f"  checkpoint not resumable, cell restarts: {exc}", flush=True)
                shutil.rmtree(paths["checkpoint"])
                paths["diag"].unlink(missing_ok=True)
                cell.previous = None
                n_labeled, scores, queried = active_learning_curve(
                    learner, data["X"], data["y"], **curve
                )
        _Cell.current = None
        diag = _read_diag(paths["diag"])
        record = {
            "setup": setup,
            "pool": pool,
            "entry": entry,
            "seed": seed,
            "n_labeled": n_labeled.tolist(),
            "scores": scores[0].tolist(),
            "queried": queried[0].tolist(),
            "cpu_seconds": cell.cpu(),
            "diagnostics": diag,
            "settings": {
                "dataset": args.dataset,
                "scale": args.scale,
                "n_initial": n_initial,
                "query_size": query_size,
                "n_rounds": args.n_rounds,
                "random_state": args.random_state + seed,
                "torch": torch.__version__,
                "source": _source_commit(),
                "threads": torch.get_num_threads(),
            },
            "command": "python " + " ".join(sys.argv),
        }
        paths["result"].write_text(json.dumps(record))
        areas = aulc(n_labeled, scores)[0]
        print(
            f"[{time.strftime('%H:%M:%S')}] {setup} {pool} {entry} seed {seed}: "
            f"AULC {areas:.4f}, final {scores[0, -1]:.4f}, "
            f"{cell.cpu():.0f} CPU s",
            flush=True,
        )
        return "finished"
    finally:
        _Cell.current = None
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _source_commit():
    """The git commit of the checkout this script runs from (or of the
    snapshot it was copied from: a ``COMMIT`` file beside ``benchmarks/``)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = root / "COMMIT"
        return commit.read_text().strip() if commit.exists() else None


def _read_diag(path):
    """The diagnostics per labelled-set size (the last record of a size wins:
    a round interrupted before its checkpoint is run again)."""
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[row["n_labeled"]] = row
    return [rows[k] for k in sorted(rows)]


# ------------------------------------------------------------------- report
def load_results(root):
    out = {}
    for path in sorted(Path(root, "results").glob("*/*/*/seed*.json")):
        r = json.loads(path.read_text())
        out.setdefault((r["setup"], r["pool"]), {}).setdefault(r["entry"], []).append(r)
    return out


def _ci95(values):
    """Half-width of the 95 % t-interval of the mean (nan for one value)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return np.full(values.shape[1:], np.nan)
    return stats.t.ppf(0.975, n - 1) * values.std(axis=0, ddof=1) / np.sqrt(n)


def _paired(records_a, records_b):
    """Scores of the seeds both entries finished, as two arrays."""
    a = {r["seed"]: r["scores"] for r in records_a}
    b = {r["seed"]: r["scores"] for r in records_b}
    seeds = sorted(set(a) & set(b))
    return np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds]), seeds


def rare_share(record, y_pool_by_row, rare):
    """Share of the queried batches (not the initial set) from the rare classes."""
    n0 = record["settings"]["n_initial"]
    rows = np.asarray(record["queried"][n0:])
    return float(np.isin(y_pool_by_row[rows], rare).mean())


def report(args):
    results = load_results(args.root)
    total = sum(
        r["cpu_seconds"] for e in results.values() for rs in e.values() for r in rs
    )
    n_cells = sum(len(rs) for e in results.values() for rs in e.values())
    print(
        f"finished cells: {n_cells} of {len(all_cells(args))}; "
        f"their CPU time: {total / 3600:.2f} h"
    )
    for setup in SETUPS:
        for pool in POOLS:
            entries = results.get((setup, pool))
            if not entries:
                continue
            _table(setup, pool, entries)
            if args.plot_dir:
                _plot(setup, pool, entries, args.plot_dir)
    for pool in POOLS:
        warm, scratch = (
            results.get(("tidal_warm", pool)),
            results.get(("tidal_scratch", pool)),
        )
        if warm and scratch:
            _side_by_side(pool, warm, scratch)
    _diagnostics(results, args)


def _fmt(values):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std():.4f}"


def _table(setup, pool, entries):
    n_labeled = np.array(next(iter(entries.values()))[0]["n_labeled"])
    rows = sorted(
        entries,
        key=lambda e: -np.mean([aulc(n_labeled, r["scores"]) for r in entries[e]]),
    )
    random = entries.get("random")
    print(
        f"\n### {setup} set-up, {pool} pool (labels {n_labeled[0]}..{n_labeled[-1]})"
        "\n\n| entry | seeds | AULC | final accuracy | Δ AULC vs random (paired) "
        "| CPU s per cell |\n|---|---|---|---|---|---|"
    )
    for e in rows:
        rs = entries[e]
        areas = [aulc(n_labeled, r["scores"]) for r in rs]
        finals = [r["scores"][-1] for r in rs]
        delta = ""
        if random and e != "random":
            a, b, seeds = _paired(rs, random)
            if len(seeds):
                d = aulc(n_labeled, a) - aulc(n_labeled, b)
                delta = f"{d.mean():+.4f} ± {d.std():.4f} ({len(seeds)})"
        cpu = np.mean([r["cpu_seconds"] for r in rs])
        print(
            f"| {e} | {len(rs)} | {_fmt(areas)} | {_fmt(finals)} | {delta} | "
            f"{cpu:.0f} |"
        )


def _plot(setup, pool, entries, plot_dir):
    """Accuracy minus random's, per labelled-set size, mean and 95 % band over
    the paired seeds (the style of TiDAL's Figures 3 and 4)."""
    from matplotlib.figure import Figure

    if "random" not in entries:
        return
    n_labeled = np.array(entries["random"][0]["n_labeled"])
    ax = Figure(figsize=(6.5, 4), layout="constrained").add_subplot()
    ax.axhline(0.0, color="black", lw=1, label="random")
    for e in ENTRIES[setup]:
        if e == "random" or e not in entries:
            continue
        a, b, seeds = _paired(entries[e], entries["random"])
        if not len(seeds):
            continue
        d = 100 * (a - b)
        mean, half = d.mean(axis=0), _ci95(d)
        (line,) = ax.plot(n_labeled, mean, marker=".", label=f"{e} ({len(seeds)})")
        if len(seeds) > 1:
            ax.fill_between(
                n_labeled, mean - half, mean + half, color=line.get_color(), alpha=0.15
            )
    ax.set_xlabel("labelled samples")
    ax.set_ylabel("test accuracy − random's (points)")
    ax.set_title(f"{setup} set-up, {pool} pool: mean and 95 % CI over seeds")
    ax.legend(fontsize="small", title="entry (seeds)")
    ax.grid(alpha=0.3)
    path = Path(plot_dir) / f"papers_budget_{setup}_{pool}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(path, dpi=110)
    print(f"\n![{setup}, {pool}](images/{path.name})")


def _side_by_side(pool, warm, scratch):
    n_labeled = np.array(next(iter(warm.values()))[0]["n_labeled"])
    print(
        f"\n### TiDAL set-up, {pool} pool: warm start against from scratch\n\n"
        "| entry | AULC warm | AULC scratch | final warm | final scratch | "
        "Δ AULC scratch − warm (paired) |\n|---|---|---|---|---|---|"
    )
    for e in ENTRIES["tidal_warm"]:
        if e not in warm and e not in scratch:
            continue
        cols = []
        for side in (warm, scratch):
            rs = side.get(e, [])
            cols.append(
                _fmt([aulc(n_labeled, r["scores"]) for r in rs]) + f" ({len(rs)})"
                if rs
                else "–"
            )
        for side in (warm, scratch):
            rs = side.get(e, [])
            cols.append(_fmt([r["scores"][-1] for r in rs]) if rs else "–")
        delta = "–"
        if e in warm and e in scratch:
            a, b, seeds = _paired(scratch[e], warm[e])
            if len(seeds):
                d = aulc(n_labeled, a) - aulc(n_labeled, b)
                delta = f"{d.mean():+.4f} ± {d.std():.4f} ({len(seeds)})"
        print(f"| {e} | " + " | ".join(cols) + f" | {delta} |")


def _diagnostics(results, args):
    """Fit of S, batch redundancy, rare-class share per entry (mean over rounds
    and seeds)."""
    ys = {}
    print(
        "\n### Training-side diagnostics (mean over rounds, ± std over seeds)\n\n"
        "| set-up | pool | entry | train acc. on S | epochs per round | batch cosine "
        "| rare-class share | classes per batch |\n|---|---|---|---|---|---|---|---|"
    )
    for (setup, pool), entries in results.items():
        if pool not in ys:
            ys[pool] = load_pool(pool, args)["y"]
        y = ys[pool]
        counts = np.bincount(y[: len(y) - 10_000])
        rare = np.argsort(counts)[:5]
        for e in ENTRIES[setup]:
            rs = entries.get(e)
            if not rs:
                continue
            fit, epochs, cos, share, classes = [], [], [], [], []
            for r in rs:
                d = r["diagnostics"]
                fit.append(np.mean([x["train_accuracy"] for x in d]))
                ep = np.diff([0] + [x["epochs"] for x in d])
                # a resumed run restarts the history: its first round's
                # difference is not an epoch count
                ep = ep[ep > 0]
                epochs.append(
                    np.mean([x["epochs"] for x in d])
                    if setup == "tidal_scratch"
                    else np.mean(ep)
                )
                cos.append(np.nanmean([x.get("batch_cosine", np.nan) for x in d]))
                share.append(rare_share(r, y, rare) if pool != "balanced" else np.nan)
                n0, b = r["settings"]["n_initial"], r["settings"]["query_size"]
                q = np.asarray(r["queried"][n0:]).reshape(-1, b)
                classes.append(np.mean([len(np.unique(y[row])) for row in q]))
            share_s = "–" if pool == "balanced" else _fmt2(share)
            print(
                f"| {setup} | {pool} | {e} | {_fmt2(fit)} | {_fmt2(epochs, 1)} | "
                f"{_fmt2(cos)} | {share_s} | {_fmt2(classes, 1)} |"
            )


def _fmt2(values, digits=3):
    values = np.asarray(values, dtype=float)
    return f"{np.nanmean(values):.{digits}f} ± {np.nanstd(values):.{digits}f}"


# --------------------------------------------------------------------- main
def _terminate(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def _slice(text):
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--slice must be K/N with integers 0 <= K < N, got {text!r}"
        ) from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(
            f"--slice must be K/N with 0 <= K < N, got {text!r}"
        )
    return k, n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", nargs="+", choices=SETUPS)
    parser.add_argument("--pool", nargs="+", choices=POOLS)
    parser.add_argument("--entry", nargs="+", help="entries to run (default: all)")
    parser.add_argument("--seed", nargs="+", type=int, help="seed indices to run")
    parser.add_argument("--seeds", type=int, default=N_SEEDS, help="seeds per cell")
    parser.add_argument("--slice", type=_slice, help="K/N: every N-th cell from K")
    parser.add_argument("--max-cells", type=int, help="stop after this many cells")
    parser.add_argument("--n-rounds", type=int, default=N_ROUNDS)
    parser.add_argument("--paper", action="store_true", help="the papers' settings")
    parser.add_argument(
        "--tidal-epochs", type=int, help="override the scale's epochs per cycle"
    )
    parser.add_argument("--dal-min-epochs", type=int, help="override dynamicAL's k")
    parser.add_argument("--dataset", choices=("fashion", "cifar10"), default="fashion")
    parser.add_argument("--data", help="data folder (default: Debian's Fashion-MNIST)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--root", help="results and checkpoints (outside the tree)")
    parser.add_argument("--list", action="store_true", help="list cells and exit")
    parser.add_argument("--report", action="store_true", help="tables from results")
    parser.add_argument("--plot-dir", help="with --report: write plots here")
    args = parser.parse_args(argv)
    args.scale = dict(SCALES["paper" if args.paper else "cpu"])
    for key in ("tidal_epochs", "dal_min_epochs"):
        if getattr(args, key) is not None:  # a smaller trial of a scale
            if args.root is None and not (args.report or args.list):
                parser.error(f"--{key.replace('_', '-')} needs its own --root")
            args.scale[key] = getattr(args, key)
    if args.dataset == "cifar10" and not args.paper:
        parser.error("--dataset cifar10 runs with --paper only")
    if args.root is None:
        name = "papers_budget" + ("_paper" if args.paper else "")
        if args.dataset != "fashion":
            name += f"_{args.dataset}"
        args.root = str(Path.home() / ".cache" / "skal" / name)
    torch.set_num_threads(args.threads)
    if args.entry:
        known = {e for s in SETUPS for e in ENTRIES[s]}
        unknown = sorted(set(args.entry) - known)
        if unknown:
            parser.error(f"unknown --entry {unknown}; known: {sorted(known)}")
    if args.report:
        report(args)
        return
    cells = selected_cells(args)
    if args.list:
        for c in cells:
            paths = cell_paths(args.root, *c)
            state = (
                "done"
                if paths["result"].exists()
                else ("started" if paths["checkpoint"].exists() else "-")
            )
            print(*c, state)
        return
    # SIGTERM (kill PID) unwinds like Ctrl-C: the running cell writes its CPU
    # seconds before the process ends
    signal.signal(signal.SIGTERM, _terminate)
    print(f"command: python {' '.join(sys.argv)}; root {args.root}", flush=True)
    print(f"pid {os.getpid()}, {len(cells)} cells selected", flush=True)
    ran = 0
    for c in cells:
        status = run_cell(*c, args)
        if status == "finished":
            ran += 1
            if args.max_cells and ran >= args.max_cells:
                break


if __name__ == "__main__":
    main()
