"""CPU time of inference and training with glibc's default allocator and tuned.

glibc's malloc serves every block above its mmap threshold (which grows
with the blocks freed, up to 32 MiB) with freshly mapped memory and
returns it to the system when it is freed; each page of a new block is
faulted in at first touch. A batch of activations larger than that is
mapped and faulted in again for every batch. With
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set high, freed
blocks stay in the heap and are reused (the process keeps the memory it
has used once; jemalloc and tcmalloc, loaded with ``LD_PRELOAD``, behave
alike).

Each row runs ``skal.NeuralNetClassifier.predict_proba`` (at several
inference batch sizes) or one training epoch (``partial_fit``) of a
network on random 3x32x32 images in a fresh process, once with glibc's
defaults and once with both thresholds set to ``--threshold`` bytes; the
two processes run in turns ``--repeats`` times and the best time of each
counts. ``ratio`` is default / tuned.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/cpu_allocator.py
    PYTHONPATH=. python benchmarks/cpu_allocator.py --models ResNet18 --n 512
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import print_table  # noqa: E402

MODELS = ("TutorialCNN", "ResNet18")


def child(model, mode, batch, n):
    """Seconds of one pass in this process (printed on the last line)."""
    import numpy as np
    import torch

    import skal

    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    X = rng.randn(n, 3, 32, 32).astype(np.float32)
    y = rng.randint(10, size=n)
    net = skal.NeuralNetClassifier(
        getattr(skal.nets, model),
        classes=list(range(10)),
        max_epochs=1,
        batch_size=batch,
        inference_batch_size=batch,
    ).initialize()
    if mode == "inference":
        net.predict_proba(X[:batch])  # warm-up

        def run():
            net.predict_proba(X)
    else:
        net.partial_fit(X[:batch], y[:batch])  # warm-up

        def run():
            net.partial_fit(X, y)

    start = time.perf_counter()
    run()
    print(time.perf_counter() - start)


def timed(args, model, mode, batch, env):
    argv = [sys.executable, __file__, "--child", model, mode, str(batch)]
    argv += ["--n", str(args.n)]
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, env=env
    ).stdout
    return float(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--n", type=int, default=1024, help="images per pass")
    parser.add_argument("--inference-batches", nargs="+", type=int, default=[64, 512])
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threshold", type=int, default=2**32)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model, mode, batch = args.child
        child(model, mode, int(batch), args.n)
        return
    default = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    }
    tuned = dict(
        default,
        MALLOC_MMAP_THRESHOLD_=str(args.threshold),
        MALLOC_TRIM_THRESHOLD_=str(args.threshold),
    )
    cases = [
        (model, "inference", batch)
        for model in args.models
        for batch in args.inference_batches
    ]
    cases += [(model, "training", args.train_batch) for model in args.models]
    rows = []
    for model, mode, batch in cases:
        best = {"default": float("inf"), "tuned": float("inf")}
        for _ in range(args.repeats):  # in turns
            for key, env in (("default", default), ("tuned", tuned)):
                best[key] = min(best[key], timed(args, model, mode, batch, env))
        rows.append(
            {
                "model": model,
                "pass": mode,
                "N": args.n,
                "batch": batch,
                "default s": f"{best['default']:.3f}",
                "tuned s": f"{best['tuned']:.3f}",
                "ratio": f"{best['default'] / best['tuned']:.2f}",
            }
        )
    print(
        f"glibc's defaults against MALLOC_MMAP_THRESHOLD_ = MALLOC_TRIM_THRESHOLD_"
        f" = {args.threshold}; best of {args.repeats}, each pass in a fresh "
        "process; ratio = default / tuned"
    )
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
