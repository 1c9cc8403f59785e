"""Batch-aware dynamicAL: cost and exactness, measured side by side in one run.

Four tables:

1. **Cost.** For the PyTorch tutorial CNN and skal's CIFAR ResNet-18 on
   random 3x32x32 inputs (random weights, BatchNorm statistics moved by a
   few train-mode passes), the time of one forward+backward pass over the
   N candidates (eval mode, batches of 128), then, as ratios to it,
   ``DynamicAL.select`` (top-b) and ``BatchDynamicAL.select``, exact and
   with a sketch. Ratios use process CPU time (one thread; robust to other
   load on a shared machine); wall time is shown next to it. Every strategy
   also computes ``G_S`` over a labelled set of N // 4 samples.
   ``features/sample`` is the number of floats kept per candidate,
   ``#params`` the size of one full per-sample gradient.
2. **Exactness.** ``BatchDynamicAL`` (float32) against a brute-force
   float64 computation (full per-sample gradients by a plain autograd loop)
   on the small models of ``tests/test_dynamic_al.py``: the max relative
   error of the pairwise products ``g_uᵀ g_q`` (relative to
   ``‖g_u‖‖g_q‖``), of ``Δ(Q̂|S)``, and whether the greedy picks agree.
3. **Sketch error.** For the tutorial CNN (at 16x16), the relative error
   ``|ĝ_uq − g_uᵀ g_q| / (‖g_u‖‖g_q‖)`` over all pairs and 20 sketches,
   per sketch size k: its 90th percentile and maximum, next to the
   bound ``√(8 / (k δ))`` that holds with probability ``1 − δ = 0.9``.
4. **Batch composition.** One query of 30 on digits after training a
   SmallCNN on 30 random labels (3 seeds): the mean pairwise cosine of the
   chosen gradients, R(Q|S), the number of pseudo-label classes in the batch
   and the pseudo-labels' accuracy (pool labels, training side only).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/batch_dynamic_al.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import fmt_bytes, measure, print_table  # noqa: E402

import skal  # noqa: E402
from skal.ntk import approximation_ratio  # noqa: E402
from skal.pairwise import PairwiseGradients, sketch_error_bound  # noqa: E402
from skal.strategies import BatchDynamicAL, DynamicAL, QueryContext  # noqa: E402
from tests import test_batch_dynamic_al as bcases  # noqa: E402
from tests import test_dynamic_al as cases  # noqa: E402

N_CLASSES = 10
BATCH = 128
FACTORIES = {"tutorial_cnn": skal.nets.TutorialCNN, "resnet18": skal.nets.ResNet18}


def _module(name):
    with skal._utils.torch_seed(0):
        module = FACTORIES[name]()
        module.train()
        with torch.no_grad():
            for _ in range(3):
                module(torch.randn(32, 3, 32, 32))
    return module.eval()


def _forward_backward(module, X):
    module.zero_grad(set_to_none=True)
    for start in range(0, len(X), BATCH):
        logits = module(torch.as_tensor(X[start : start + BATCH]))
        F.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum").backward()
    module.zero_grad(set_to_none=True)


def cost_rows(name, n, b, sketch, exact, repeats):
    module = _module(name)
    rng = np.random.RandomState(0)
    X = rng.randn(n, 3, 32, 32).astype(np.float32)
    n_lab = n // 4
    X_lab = rng.randn(n_lab, 3, 32, 32).astype(np.float32)
    y_lab = rng.randint(0, N_CLASSES, n_lab)
    net = skal.NeuralNetClassifier(module, classes=list(range(N_CLASSES)))
    net.initialize()

    def context():
        return QueryContext(
            net, np.arange(N_CLASSES), X_lab, y_lab, np.random.RandomState(0)
        )

    x0 = torch.as_tensor(X[:2])
    methods = [("forward+backward", lambda: _forward_backward(module, X), None)]
    methods.append(
        (
            f"dynamic_al top-{b}",
            lambda: DynamicAL(batch_size=BATCH).select(context(), X, b),
            None,
        )
    )
    if exact:
        methods.append(
            (
                f"dynamic_al_batch exact, b={b}",
                lambda: BatchDynamicAL(batch_size=BATCH).select(context(), X, b),
                PairwiseGradients(module),
            )
        )
    methods.append(
        (
            f"dynamic_al_batch sketch k={sketch}, b={b}",
            lambda: BatchDynamicAL(sketch_size=sketch, batch_size=BATCH).select(
                context(), X, b
            ),
            PairwiseGradients(module, sketch_size=sketch),
        )
    )
    n_params = sum(p.numel() for p in module.parameters())
    rows, base = [], None
    for method, fn, engine in methods:
        cpu = []

        def timed(fn=fn, cpu=cpu):
            start = time.process_time()
            fn()
            cpu.append(time.process_time() - start)

        sec, mem, _ = measure(timed, repeats=repeats)
        cpu_sec = min(cpu)
        base = cpu_sec if base is None else base
        size = "-"
        if engine is not None:
            size = engine.features(x0, torch.tensor([0, 1])).size_per_sample
        rows.append(
            {
                "model": name,
                "N": n,
                "method": method,
                "wall s": f"{sec:.2f}",
                "CPU s": f"{cpu_sec:.2f}",
                "ratio (CPU)": f"{cpu_sec / base:.2f}",
                "features/sample": size,
                "#params": n_params,
                "peak_mem": fmt_bytes(mem),
            }
        )
    return rows


def exactness_rows():
    rows = []
    for name in bcases.EXACT_MODELS:
        module, X, X_lab, y_lab = cases._build(name)
        G, g_s, _ = bcases._full_gradients(module, X, X_lab, y_lab)
        ref = G @ G.T
        feats = PairwiseGradients(module).features(
            torch.as_tensor(X), lambda z: z.argmax(1)
        )
        got = feats.gram().double().numpy()
        scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        pair_err = np.max(np.abs(got - ref) / scale)
        n = len(X) // 2
        ref_idx, ref_obj = bcases._greedy_reference(G, g_s, 2.0, n)
        strategy = BatchDynamicAL(gamma=2.0, batch_size=5)
        idx = strategy.select(cases._context(module, X_lab, y_lab), X, n)
        same = list(idx) == list(ref_idx)
        obj_err = abs(strategy.objective_ - ref_obj) / abs(ref_obj)
        rows.append(
            {
                "model": name,
                "n": len(X),
                "b": n,
                "max rel err g_u.g_q": f"{pair_err:.1e}",
                "rel err Δ(Q|S)": f"{obj_err:.1e}",
                "picks": "identical" if same else "DIFFER",
            }
        )
    return rows


def sketch_rows(sizes, n_sketches=20, delta=0.1):
    with skal._utils.torch_seed(0):
        module = skal.nets.TutorialCNN(input_size=16)
        module.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, 16, 16, generator=gen)
    y = torch.randint(0, N_CLASSES, (24,), generator=gen)
    exact = PairwiseGradients(module).features(x, y)
    ref = exact.gram().double()
    norms = ref.diagonal().sqrt()
    off = ~torch.eye(len(x), dtype=torch.bool)
    rows = []
    for k in sizes:
        errs = []
        for seed in range(n_sketches):
            sk = PairwiseGradients(module, sketch_size=k, seed=seed).features(x, y)
            errs.append(((sk.gram().double() - ref) / torch.outer(norms, norms))[off])
        errs = torch.cat(errs).abs().numpy()
        bound = sketch_error_bound(k, delta)
        rows.append(
            {
                "k": k,
                "features/sample": sk.size_per_sample,
                "exact features/sample": exact.size_per_sample,
                "p90 rel err": f"{np.quantile(errs, 0.9):.3f}",
                "max rel err": f"{errs.max():.3f}",
                f"bound (δ={delta})": f"{bound:.3f}",
                "share above bound": f"{np.mean(errs >= bound):.4f}",
            }
        )
    return rows


def composition_rows(seeds=(0, 1, 2), n_initial=30, b=30):
    """Training-side composition of one query on digits, per strategy."""
    from sklearn.model_selection import train_test_split

    from skal.datasets import load_digits_images

    X, y = load_digits_images()
    rows = []
    for seed in seeds:
        train, _ = train_test_split(
            np.arange(len(y)), test_size=0.3, stratify=y, random_state=0
        )
        rng = np.random.RandomState(seed)
        init = rng.choice(train, n_initial, replace=False)
        pool = np.setdiff1d(train, init)
        net = skal.NeuralNetClassifier(
            skal.nets.SmallCNN, max_epochs=30, batch_size=32, lr=1e-3, verbose=0
        )
        learner = skal.ActiveLearner(net, random_state=seed).fit(X[init], y[init])
        module = learner.estimator_.module_
        context = QueryContext(
            learner.estimator_,
            np.arange(10),
            X[init],
            y[init],
            np.random.RandomState(seed),
        )
        batch = BatchDynamicAL()
        feats = batch.features(context, X[pool])
        picks = {
            "dynamic_al top-b": DynamicAL().select(context, X[pool], b),
            "dynamic_al_batch": batch.select(context, X[pool], b),
            "dynamic_al_batch λ=-1": BatchDynamicAL(pairwise_weight=-1.0).select(
                context, X[pool], b
            ),
            "random": np.random.RandomState(seed).choice(len(pool), b, replace=False),
        }
        for name, idx in picks.items():
            sub = _subset(feats, idx)
            gram = sub.gram().double().numpy()
            norms = np.sqrt(np.diag(gram))
            cos = gram / np.outer(norms, norms)
            off = ~np.eye(b, dtype=bool)
            labels = sub.targets.numpy()
            ratio = approximation_ratio(module, X[init], y[init], X[pool][idx])
            rows.append(
                {
                    "seed": seed,
                    "strategy": name,
                    "mean cos(g_u, g_q)": f"{cos[off].mean():.3f}",
                    "R(Q|S)": f"{ratio:.3f}",
                    "pseudo-label classes": len(np.unique(labels)),
                    "pseudo-label acc": f"{np.mean(labels == y[pool][idx]):.2f}",
                }
            )
    return rows


def _subset(feats, idx):
    from skal.pairwise import GradientFeatures

    idx = torch.as_tensor(np.asarray(idx))
    return GradientFeatures(
        feats.sq_norms[idx],
        None,
        feats.targets[idx],
        feats.dense[idx],
        [(u[idx], dy[idx]) for u, dy in feats.factored],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32, help="b, picks per query")
    parser.add_argument("--sketch-size", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("command: python " + " ".join(sys.argv))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}\n")
    config = (
        [("tutorial_cnn", 256, True), ("resnet18", 32, False)]
        if args.quick
        else [("tutorial_cnn", 1024, True), ("resnet18", 64, False)]
    )
    rows = []
    for name, n, exact in config:
        rows += cost_rows(name, n, args.batch, args.sketch_size, exact, args.repeats)
    print(
        "## cost (ratio = CPU seconds / those of one forward+backward over the same"
        " N; best of --repeats; single thread)"
    )
    print_table(rows, list(rows[0]))
    print("\n## exactness against float64 brute force (gamma=2, b = n // 2)")
    rows = exactness_rows()
    print_table(rows, list(rows[0]))
    print("\n## sketch error, tutorial CNN 16x16, 24 samples, 20 sketches")
    rows = sketch_rows([16, 64, 256, 1024])
    print_table(rows, list(rows[0]))
    print(
        "\n## one query on digits (SmallCNN, 30 random initial labels, b=30):"
        " batch composition, training-side only"
    )
    rows = composition_rows()
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
