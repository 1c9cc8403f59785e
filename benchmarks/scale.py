"""Pools at scale: core-set and BADGE cost, one pool over Dask, TiDAL overhead.

Three parts, each printed as a table measured side by side in one run:

- ``select``: core-set and BADGE at N candidates, C classes, D = 512 (an MLP
  784-512-C on random 1x28x28 inputs, L labelled samples, a query of b).
  "One forward" is one plain forward pass of that MLP over the same N
  candidates (``forward_iter``), timed in turns with the two strategies
  (best of ``--repeats`` each; peak memory of one call in a fresh process,
  glibc's mmap threshold fixed at 1 MiB there);
  the strategies' times include their own forward passes (N candidates and
  L labelled). ``peak_mem`` is the peak
  resident set above the level before the call (CUDA: peak allocation);
  ``formula`` is the memory the docs state for the strategy (embeddings,
  centres, per-candidate vectors, one block; the forward's batch
  activations come on top). ``same picks`` compares core-set's picks with
  the previous, eager implementation (kept in tests/test_strategies.py) run
  in float64 on the same embeddings, and BADGE's seeding (timed alone on
  the gradient embeddings) with its previous version, on the same factors.
- ``dask``: ``ActiveLearner.query`` in one process and inside
  ``joblib.parallel_backend("dask")`` on a 2-worker ``LocalCluster``
  (processes, one thread each): identical picks, and the time ratio.
- ``tidal``: ``benchmarks/tidal_overhead.py`` (epoch time with head /
  without, tutorial CNN and ResNet-18).

Usage (from the repository root, so that the tests import)::

    PYTHONPATH=. python benchmarks/scale.py
    PYTHONPATH=. python benchmarks/scale.py --parts select --n 10000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import check_device, fmt_bytes, print_table  # noqa: E402
from _harness import measure as _measure  # noqa: E402
from suites.baselines import _trim_heap  # noqa: E402

import skal  # noqa: E402
from skal.strategies import (  # noqa: E402
    BADGE,
    CoreSet,
    QueryContext,
    gradient_embedding_factors,
    kmeans_pp_gradient,
)

D = 512


def measure(fn, *, device, repeats):
    """The harness's measure, after returning freed heap memory to the OS."""
    _trim_heap()
    return _measure(fn, device=device, repeats=repeats)


def coreset_memory(n, d, n_lab, b, chunk=2048):
    """Bytes core-set keeps, as stated in the docs (float32 embeddings)."""
    return (
        4 * n * d
        + 4 * n_lab * d
        + 12 * (n_lab + b) * d
        + 32 * n
        + 4 * chunk * (chunk + d)
    )


def badge_memory(n, c, d, device="cpu", h_bytes=4):
    """Bytes BADGE keeps, as stated in the docs: the two factors (``h`` in
    ``h_bytes`` per number), on the CPU their float16 copies, and about 100
    bytes per candidate."""
    copies = 2 * n * (c + d) if torch.device(device).type == "cpu" else 0
    return 4 * n * c + h_bytes * n * d + copies + 100 * n


def _mlp(n_classes, device):
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


def select_calls(args):
    """The net, data and the calls that ``select`` times, by name."""
    rng = np.random.RandomState(0)
    n, c, n_lab, b = args.n, args.n_classes, args.n_labeled, args.query_size
    net = _mlp(c, args.device)
    X_pool = rng.rand(n, 1, 28, 28).astype(np.float32)
    X_lab = rng.rand(n_lab, 1, 28, 28).astype(np.float32)
    y_lab = rng.randint(c, size=n_lab)

    def context():
        return QueryContext(net, np.arange(c), X_lab, y_lab, np.random.RandomState(0))

    def forward():
        for _ in net.forward_iter(X_pool, device=net.device):
            pass

    calls = {
        "forward": forward,
        "coreset": lambda: CoreSet().select(context(), X_pool, b),
        "badge": lambda: BADGE().select(context(), X_pool, b),
        "badge16": lambda: BADGE(embedding_dtype="float16").select(
            context(), X_pool, b
        ),
    }
    return net, X_pool, X_lab, context, calls


def first_call_peak(args, key):
    """Peak memory of one call of ``key`` in a fresh process (bytes or None).

    In the process that times the calls, each finds the heap that glibc
    kept from the others, and its peak varies by tens of MB with it. The
    fresh process also fixes glibc's mmap threshold at 1 MiB (instead of
    one that grows with the blocks freed), so that large freed blocks go
    back to the system at once and the peak follows the live memory: with
    the default, the same call's peak varied by up to 90 MB between runs.
    """
    argv = [sys.executable, __file__, "--peak-of", key, "--device", args.device]
    for name in ("n", "n_classes", "n_labeled", "query_size"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2**20))
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, env=env
    ).stdout
    value = out.strip().splitlines()[-1]
    return None if value == "None" else int(value)


def select_rows(args):
    from tests.test_strategies import (
        previous_k_center_greedy,
        previous_kmeans_pp_gradient,
    )

    n, c, n_lab, b = args.n, args.n_classes, args.n_labeled, args.query_size
    net, X_pool, X_lab, context, calls = select_calls(args)
    # in turns, best of --repeats each, so that other jobs on the machine
    # slow them alike; peak memory from a first call in a fresh process
    best = dict.fromkeys(calls, float("inf"))
    results = {}
    for _ in range(args.repeats):
        for key, call in calls.items():
            seconds, _, results[key] = measure(call, device=args.device, repeats=1)
            best[key] = min(best[key], seconds)
    peak = {key: first_call_peak(args, key) for key in calls}
    rows = []
    base = best["forward"]
    rows.append(_row("forward (one)", n, c, base, base, peak["forward"], None, "-"))
    seconds, mem, picks = best["coreset"], peak["coreset"], results["coreset"]
    same = "-"
    if not args.skip_reference:
        h_pool = torch.as_tensor(net.embed(X_pool), dtype=torch.float64)
        h_lab = torch.as_tensor(net.embed(X_lab), dtype=torch.float64)
        expected = previous_k_center_greedy(h_pool, h_lab, b)
        same = "yes" if np.array_equal(picks, expected) else "NO"
    formula = coreset_memory(n, D, n_lab, b)
    rows.append(_row(f"coreset b={b}", n, c, seconds, base, mem, formula, same))
    seconds, mem = best["badge"], peak["badge"]
    formula = badge_memory(n, c, D, args.device)
    rows.append(_row(f"badge b={b}", n, c, seconds, base, mem, formula, "-"))
    seconds, mem = best["badge16"], peak["badge16"]
    formula = badge_memory(n, c, D, args.device, h_bytes=2)
    rows.append(_row(f"badge b={b} float16 h", n, c, seconds, base, mem, formula, "-"))
    if not args.skip_reference:
        a, h = gradient_embedding_factors(context(), X_pool)
        new, _, ours = measure(
            lambda: kmeans_pp_gradient(a, h, b, random_state=np.random.RandomState(0)),
            device=args.device,
            repeats=1,
        )
        old, _, theirs = measure(
            lambda: previous_kmeans_pp_gradient(a, h, b, np.random.RandomState(0)),
            device=args.device,
            repeats=1,
        )
        same = "yes" if np.array_equal(ours, theirs) else "NO"
        rows.append(_row("badge seeding only", n, c, new, base, None, None, same))
        rows.append(
            _row("badge seeding, previous version", n, c, old, base, None, None, "-")
        )
    return rows


def _row(method, n, c, seconds, base, mem, formula, same):
    return {
        "method": method,
        "N": n,
        "C": c,
        "seconds": f"{seconds:.3f}",
        "ratio": f"{seconds / base:.2f}x",
        "peak_mem": fmt_bytes(mem),
        "formula": fmt_bytes(formula),
        "same picks": same,
    }


def dask_rows(args):
    import joblib
    from dask import distributed

    rng = np.random.RandomState(1)
    n = args.dask_n
    X = rng.rand(n + 200, 1, 28, 28).astype(np.float32)
    y = rng.randint(10, size=n + 200)
    rows = []
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster),
    ):
        for strategy in ("entropy", "coreset"):

            def learner(strategy=strategy):
                net = _mlp(10, args.device).set_params(max_epochs=1)
                return skal.ActiveLearner(net, strategy, random_state=0).fit(
                    X[:200], y[:200]
                )

            one = learner()
            start = time.perf_counter()
            local = one.query(X[200:], n=100)
            local_s = time.perf_counter() - start
            two = learner()
            with joblib.parallel_backend("dask"):
                start = time.perf_counter()
                spread = two.query(X[200:], n=100)
                spread_s = time.perf_counter() - start
            rows.append(
                {
                    "strategy": strategy,
                    "N": n,
                    "one process s": f"{local_s:.3f}",
                    "2 workers s": f"{spread_s:.3f}",
                    "ratio": f"{spread_s / local_s:.2f}",
                    "identical picks": "yes" if np.array_equal(local, spread) else "NO",
                }
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["select", "dask", "tidal"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--n-classes", type=int, default=100)
    parser.add_argument("--n-labeled", type=int, default=1000)
    parser.add_argument("--query-size", type=int, default=1000)
    parser.add_argument("--dask-n", type=int, default=20_000)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    if args.peak_of:  # one call, in this fresh process (see first_call_peak)
        _, _, _, _, calls = select_calls(args)
        print(measure(calls[args.peak_of], device=args.device, repeats=1)[1])
        return
    print(f"device={args.device} torch threads={torch.get_num_threads()}")
    if "select" in args.parts:
        rows = select_rows(args)
        print_table(rows, list(rows[0]))
        print()
    if "dask" in args.parts:
        rows = dask_rows(args)
        print_table(rows, list(rows[0]))
        print()
    if "tidal" in args.parts:
        import tidal_overhead

        tidal_overhead.main(["--device", args.device, "--repeats", "3"])


if __name__ == "__main__":
    main()
