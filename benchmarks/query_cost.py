"""Query cost of skal's strategies, as ratios measured side by side in one run.

Each suite in ``benchmarks/suites`` measures its strategies and the baseline
pass they are compared with (a forward pass, or a forward+backward pass, over
the same samples on the same device) and returns table rows.

Usage::

    python benchmarks/query_cost.py                  # every suite, CPU
    python benchmarks/query_cost.py --suite dynamic_al --device cuda
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import check_device, print_table  # noqa: E402

# suite name -> module in benchmarks/suites exposing
# ``add_arguments(parser)`` (optional) and ``rows(args) -> list[dict]``
SUITES: dict[str, str] = {
    "baselines": "baselines",
    "dynamic_al": "dynamic_al",
    "tidal": "tidal",
}

COLUMNS = [
    "suite",
    "model",
    "method",
    "N",
    "C",
    "batch",
    "seconds",
    "ratio",
    "baseline",
    "peak_mem",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=sorted(SUITES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    modules = {
        name: importlib.import_module(f"suites.{mod}") for name, mod in SUITES.items()
    }
    for module in modules.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    rows = []
    for name in args.suite or sorted(SUITES):
        rows += [{"suite": name, **row} for row in modules[name].rows(args)]
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
