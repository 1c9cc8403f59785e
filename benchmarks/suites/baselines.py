"""Query cost of the baselines "coreset", "badge", "bald" and "albl".

Model: ``skal.nets.MLP`` 784-512-C with dropout 0.25 (randomly initialized)
on random Fashion-MNIST-shaped inputs (1x28x28), so the penultimate embedding
has D = 512. Baseline: one plain forward pass of that net (``forward_iter``,
results kept on the device) over the same N candidates. Each strategy is
timed end to end from the raw inputs: core-set and BADGE include the forward
passes that produce their embeddings (N candidates plus the labelled set),
BALD its T = 10 stochastic passes, ALBL the sub-strategy its bandit drew.

When scikit-activeml is installed, its ``CoreSet`` and ``Badge`` run on the
same embeddings (computed once, outside the timing), next to skal's
``k_center_greedy`` (float32 as ``CoreSet`` runs it, and float64) and
``kmeans_pp_gradient`` on those embeddings; the core-set rows say how the
selections agree. Its ``Badge`` builds the N x (C*D) float64 gradient
matrix, so it only runs where that matrix fits in ``--skactiveml-max-gb``;
the comparison runs for pools of at most ``--skactiveml-max-n`` candidates
(it is slow on these machines).

Peak memory is the peak resident set above the level before the call, after
returning freed heap memory to the OS (``malloc_trim``); on CUDA, the peak
allocation. ``--pool-sizes``, ``--n-classes`` and ``--methods`` select rows,
e.g. to measure one method in a fresh process.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import torch
from _harness import fmt_bytes, measure

import skal
from skal.strategies import (
    ALBL,
    BADGE,
    BALD,
    CoreSet,
    QueryContext,
    gradient_embedding_factors,
    k_center_greedy,
    kmeans_pp_gradient,
)

D = 512
METHODS = ("coreset", "badge", "bald", "albl", "skactiveml")


def add_arguments(parser):
    group = parser.add_argument_group("baselines suite")
    group.add_argument("--query-size", type=int, default=1000)
    group.add_argument("--n-labeled", type=int, default=1000)
    group.add_argument("--skactiveml-max-gb", type=float, default=2.0)
    group.add_argument("--skactiveml-max-n", type=int, default=10_000)
    group.add_argument("--pool-sizes", type=int, nargs="+", default=None)
    group.add_argument("--n-classes", type=int, nargs="+", default=[10, 100])
    group.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)


def _net(n_classes, device):
    torch.manual_seed(0)
    return skal.NeuralNetClassifier(
        skal.nets.MLP,
        module__in_features=784,
        module__hidden_units=(D,),
        module__dropout=0.25,
        classes=list(range(n_classes)),
        batch_size=1024,
        device=device,
    ).initialize()


def _trim_heap():
    """Return freed heap memory to the OS, so peaks measure the call only."""
    name = ctypes.util.find_library("c")
    if name is not None and hasattr(ctypes.CDLL(name), "malloc_trim"):
        ctypes.CDLL(name).malloc_trim(0)


def _measure(fn, args, repeats=None):
    _trim_heap()
    return measure(fn, device=args.device, repeats=repeats or args.repeats)


def rows(args):
    sizes = args.pool_sizes or ([10_000] if args.quick else [10_000, 50_000])
    out = []
    for n_pool in sizes:
        for n_classes in args.n_classes:
            out += _rows_for(args, n_pool, n_classes)
    return out


def _rows_for(args, n_pool, n_classes):
    rng = np.random.RandomState(0)
    net = _net(n_classes, args.device)
    X_pool = rng.rand(n_pool, 1, 28, 28).astype(np.float32)
    X_lab = rng.rand(args.n_labeled, 1, 28, 28).astype(np.float32)
    y_lab = rng.randint(n_classes, size=args.n_labeled)
    b = args.query_size
    model = f"MLP-784-{D}-{n_classes}"

    def context():
        return QueryContext(
            net, np.arange(n_classes), X_lab, y_lab, np.random.RandomState(0)
        )

    def forward():
        for _ in net.forward_iter(X_pool, device=net.device):
            pass

    base_s, base_mem, _ = _measure(forward, args)
    rows = [_row(model, "forward (baseline)", n_pool, n_classes, base_s, 1.0, base_mem)]

    def add(method, fn, repeats=None):
        seconds, mem, result = _measure(fn, args, repeats)
        rows.append(
            _row(model, method, n_pool, n_classes, seconds, seconds / base_s, mem)
        )
        return result

    def albl():
        strategy = ALBL()
        strategy.select(context(), X_pool, b)
        return strategy.strategies_[strategy.pending_arm_]

    picks = None
    if "coreset" in args.methods:
        picks = add(
            f"coreset select b={b}", lambda: CoreSet().select(context(), X_pool, b)
        )
    if "badge" in args.methods:
        add(f"badge select b={b}", lambda: BADGE().select(context(), X_pool, b))
    if "bald" in args.methods:
        add("bald utility T=10", lambda: BALD().utility(context(), X_pool))
    if "albl" in args.methods:
        arm = add(f"albl select b={b}", albl, repeats=1)
        rows[-1]["method"] += f" (drew {type(arm).__name__})"
    if "skactiveml" in args.methods:
        rows += _on_embeddings(args, net, model, context, X_pool, picks, base_s)
    return rows


def _on_embeddings(args, net, model, context, X_pool, skal_picks, base_s):
    """skal and scikit-activeml side by side on precomputed embeddings."""
    try:
        from skactiveml.pool import Badge
        from skactiveml.pool import CoreSet as SkCoreSet
    except ImportError:
        return []
    n_pool, n_classes, b = len(X_pool), len(net.classes), args.query_size
    if n_pool > args.skactiveml_max_n:
        return []
    ctx = context()
    h_pool = net.embed(X_pool)
    h_lab = net.embed(ctx.X_labeled)
    device = net.device
    out = []

    def add(method, fn, repeats=None):
        seconds, mem, result = _measure(fn, args, repeats)
        out.append(
            _row(model, method, n_pool, n_classes, seconds, seconds / base_s, mem)
        )
        return result

    def k_center(dtype):
        return k_center_greedy(
            torch.as_tensor(h_pool, device=device, dtype=dtype),
            torch.as_tensor(h_lab, device=device, dtype=dtype),
            b,
            random_state=np.random.RandomState(0),
        )

    ours = add(
        f"skal k_center_greedy on embeddings b={b}",
        lambda: k_center(torch.float32),
    )
    ours64 = add(
        f"skal k_center_greedy on embeddings, float64 b={b}",
        lambda: k_center(torch.float64),
        repeats=1,
    )
    X_all = np.concatenate([h_pool, h_lab])
    y_all = np.concatenate([np.full(n_pool, np.nan), ctx.y_labeled.astype(float)])
    theirs = add(
        f"skactiveml CoreSet on embeddings b={b}",
        lambda: np.asarray(SkCoreSet(random_state=0).query(X_all, y_all, batch_size=b)),
        repeats=1,
    )
    out[-1]["method"] += (
        f" (vs skal float32: {_agreement(theirs, ours)};"
        f" vs skal float64: {_agreement(theirs, ours64)})"
    )
    if skal_picks is not None and not np.array_equal(ours, skal_picks):
        out[-1]["method"] += " (skal's CoreSet.select picked differently!)"

    a, h = gradient_embedding_factors(ctx, X_pool)
    first = add(
        f"skal kmeans_pp_gradient on embeddings b={b}",
        lambda: kmeans_pp_gradient(a, h, b, random_state=np.random.RandomState(0)),
    )
    g_bytes = n_pool * n_classes * D * 8
    if g_bytes > args.skactiveml_max_gb * 2**30:
        out.append(
            _row(
                model,
                f"skactiveml Badge: not run (its N x C*D float64 matrix: "
                f"{fmt_bytes(g_bytes)})",
                n_pool,
                n_classes,
                None,
                None,
                None,
            )
        )
        return out
    proba = net.predict_proba(X_pool).astype(np.float64)
    clf = _precomputed_classifier()(proba, h.cpu().numpy().astype(np.float64))
    idx = np.arange(n_pool, dtype=float)[:, None]
    theirs = add(
        f"skactiveml Badge on embeddings b={b}",
        lambda: np.asarray(
            Badge(clf_embedding_flag_name="return_embeddings", random_state=0).query(
                idx, np.full(n_pool, np.nan), clf, fit_clf=False, batch_size=b
            )
        ),
        repeats=1,
    )
    out[-1]["method"] += (
        " (same first pick)" if theirs[0] == first[0] else " (first pick differs)"
    )
    return out


def _agreement(a, b):
    """How two ordered selections agree: positions, and as sets."""
    same_pos = int((np.asarray(a) == np.asarray(b)).sum())
    same_set = len(set(a.tolist()) & set(b.tolist()))
    return f"{same_pos}/{len(a)} same position, {same_set}/{len(a)} same set"


def _precomputed_classifier():
    from skactiveml.base import SkactivemlClassifier

    class Precomputed(SkactivemlClassifier):
        """Looks up fixed probabilities and embeddings by row index."""

        def __init__(self, proba=None, embedding=None):
            super().__init__(classes=np.arange(proba.shape[1]))
            self.proba = proba
            self.embedding = embedding

        def fit(self, X, y, sample_weight=None):
            return self

        def predict_proba(self, X, return_embeddings=False):
            rows = np.asarray(X)[:, 0].astype(int)
            if return_embeddings:
                return self.proba[rows], self.embedding[rows]
            return self.proba[rows]

    return Precomputed


def _row(model, method, n_pool, n_classes, seconds, ratio, mem):
    return {
        "model": model,
        "method": method,
        "N": n_pool,
        "C": n_classes,
        "seconds": "-" if seconds is None else f"{seconds:.3f}",
        "ratio": "-" if ratio is None else f"{ratio:.2f}x",
        "baseline": "forward",
        "peak_mem": fmt_bytes(mem),
    }
