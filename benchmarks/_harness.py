"""Timing and peak-memory helpers shared by the benchmark scripts.

Timings on shared machines are noisy, so scripts report ratios of timings
taken side by side in one run, never absolute seconds alone.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _rss_peak_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measure(fn, *, device="cpu", repeats: int = 3):
    """Best-of-``repeats`` wall time of ``fn()`` and its peak extra memory.

    Memory is the peak resident set size above the level before the call
    (CPU; Linux resets the peak through /proc/self/clear_refs), or the peak
    CUDA allocation above the level before the call (CUDA).

    Returns
    -------
    seconds : float
    peak_extra_bytes : int or None
    result : object
        What the last call of ``fn`` returned.
    """
    cuda = str(device).startswith("cuda")
    best = float("inf")
    peak = None
    result = None
    for _ in range(repeats):
        result = None
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            try:
                _CLEAR_REFS.write_text("5")
            except OSError:
                pass
            base = _rss_bytes()
        start = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        if cuda:
            extra = torch.cuda.max_memory_allocated() - base
        else:
            top = _rss_peak_bytes()
            extra = None if top is None or base is None else max(top - base, 0)
        if extra is not None:
            peak = extra if peak is None else max(peak, extra)
    return best, peak, result


def check_device(parser, device: str) -> None:
    """Stop with a clear message when ``device`` is CUDA and there is none."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        parser.error(
            f"--device {device}: torch {torch.__version__} sees no CUDA device "
            f"(built for CUDA {torch.version.cuda}); run on a GPU machine or use "
            "--device cpu"
        )


def fmt_bytes(n: int | None) -> str:
    """Human-readable size, or '-' when unknown."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print rows (dicts) as a fixed-width text table."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [
        max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)
    ]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
