"""Exactness table of dynamicAL's scores: model x gamma.

Compares ``DynamicAL(gamma).utility`` (float32, skal's per-layer method) with
a plain per-sample autograd loop in float64 on the models of
``tests/test_dynamic_al.py`` (same seeds, sizes and reference code) and
prints, per model and gamma, the max relative error
``max_i |u_i - r_i| / max_i |r_i|``, the max per-sample relative error of
``‖g_i‖²`` and whether the top-k candidates agree (k = n // 4, at least 2).

Usage::

    python benchmarks/dynamic_al_exactness.py [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_dynamic_al as cases  # noqa: E402
from _harness import print_table  # noqa: E402

from skal.gradients import PerSampleGradients  # noqa: E402
from skal.strategies import DynamicAL  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="*", default=list(cases.MODELS))
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        module, X, X_lab, y_lab = cases._build(name)
        sq, dots, _ = cases._reference(module, X, X_lab, y_lab)
        module = module.to(args.device)
        context = cases._context(module, X_lab, y_lab)
        context.estimator.set_params(device=args.device)
        engine = PerSampleGradients(module)
        x = torch.as_tensor(X, device=args.device)
        stats = engine.stats(x, lambda z: z.argmax(1))
        sq_err = np.max(np.abs(stats.sq_norms.double().cpu().numpy() - sq) / sq)
        k = max(2, len(X) // 4)
        for gamma in cases.GAMMAS:
            ref = cases._combine(sq, dots, gamma)
            got = DynamicAL(gamma=gamma, batch_size=5).utility(context, X)
            same = np.array_equal(np.argsort(-got)[:k], np.argsort(-ref)[:k])
            rows.append(
                {
                    "model": name,
                    "gamma": "inf" if math.isinf(gamma) else f"{gamma:g}",
                    "n": len(X),
                    "max rel err": f"{cases._rel_err(got, ref):.1e}",
                    "max rel err |g|^2": f"{sq_err:.1e}",
                    "top-k": f"{k} {'identical' if same else 'DIFFER'}",
                    "fallback params": len(engine.fallback_parameters_),
                }
            )
    print(f"device: {args.device}, torch {torch.__version__}")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
