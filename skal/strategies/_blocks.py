"""Row-block and precision helpers shared by the selection engines.

The k-center and k-means++ engines (``_kcenter``, ``_kmeanspp``) work on
N x D matrices that may be stored in float16 or bfloat16 to save memory.
These helpers compute on them ``_ROWS`` rows at a time (no temporary the size
of the matrix) and in the dtype their arithmetic runs in, give the unit
roundoff their error bounds are scaled by, and keep scaled float16 copies of
rows with a bound of the error of their inner products.
"""

from __future__ import annotations

import functools
import math

import torch

# rows at a time where a temporary of their size is made
_ROWS = 4096
# rows per block on a GPU, where each block costs a few kernel launches
_DENSE_ROWS = 65536
# the fewest columns the float16 accumulation check multiplies
_PROBE_COLUMNS = 2048
# stored in these to save memory, computed in float32
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _row_slices(n):
    """Slices of ``_ROWS`` rows covering ``range(n)`` (read at call time)."""
    return [slice(s, s + _ROWS) for s in range(0, n, _ROWS)]


def _by_rows(fn, x, rows=None):
    """``fn`` applied to ``rows`` rows of ``x`` at a time (default
    ``_ROWS``), results concatenated: no temporary the size of ``x`` (one
    empty block if ``x`` has no row, so the result has ``fn``'s dtype)."""
    step = _ROWS if rows is None else rows
    return torch.cat([fn(x[s : s + step]) for s in range(0, max(len(x), 1), step)])


def _products_at(x, index, v):
    """``x[index] @ v``, gathering ``_ROWS`` rows at a time (``index`` may
    name a large share of ``x``)."""
    v = _computed(v)
    return _by_rows(lambda part: _computed(x.index_select(0, part)) @ v, index)


def _sq(x):
    return (x * x).sum(1)


def _row_sq(x):
    """``_sq`` in blocks of rows; float16 and bfloat16 rows in float32."""
    return _by_rows(lambda block: _sq(_computed(block)), x)


def _computed_dtype(dtype):
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _computed(x):
    """``x`` in the dtype its arithmetic runs in."""
    return x.to(_computed_dtype(x.dtype))


def _matmul_rows(x, m):
    """``x @ m``; float16 and bfloat16 rows in float32, ``_ROWS`` at a time
    (``_DENSE_ROWS`` on a GPU, where each block is a few kernel launches)."""
    if x.dtype not in _LOW_PRECISION:
        return x @ m
    m = m.float()
    rows = _ROWS if x.device.type == "cpu" else _DENSE_ROWS
    return _by_rows(lambda block: block.float() @ m, x, rows)


def _unit_roundoff(dtype, device):
    eps = torch.finfo(dtype).eps / 2
    if (
        dtype == torch.float32
        and device.type == "cuda"
        and torch.get_float32_matmul_precision() != "highest"
    ):
        eps = 2.0**-11
    return eps


def _non_negative(x):
    """Whether every entry of ``x`` is >= 0 (no temporary of its size)."""
    return all(bool((x[rows] >= 0).all()) for rows in _row_slices(x.shape[0]))


class _HalfRows:
    """A float16 copy of the rows of ``x`` in ``order``, scaled by a power of
    two, and a bound of the error of inner products computed from it
    (``norms``: an upper bound of the rows' norms, in that order).

    Scaled rows have norms of at most 128, so products stay far below
    float16's largest number. For rows ``x``, ``y`` of norms ``|x|``,
    ``|y|``, the copy's inner product (float16 products accumulated in
    float32, rounded to float16) differs from ``x.y`` by at most
    ``(2^-10 + 2^-11 + 2^-20 + 4 D 2^-24) |x||y|`` (the two rows' rounding,
    the accumulation, the result's rounding), plus terms for float16's
    subnormal numbers, in units of the scale.
    """

    def __init__(self, x, norms, order):
        norms = norms.double() * (1.0 + 2.0**-16)
        top = float(norms.max())
        exponent = math.floor(math.log2(128.0 / top)) if top > 0 else 0
        self.scale = 2.0 ** min(max(exponent, -100), 100)
        self.norms = norms.mul_(self.scale)  # in units of the scale
        self.rows = torch.empty(x.shape, dtype=torch.float16)
        # (scaling by a power of two is exact; a small temporary at a time)
        step = max(1, 2**18 // max(1, x.shape[1]))
        for s in range(0, x.shape[0], step):
            rows = _computed(x.index_select(0, order[s : s + step]))
            self.rows[s : s + step] = rows.mul_(self.scale)
        dim = x.shape[1]
        self.relative = 2.0**-10 + 2.0**-11 + 2.0**-20 + 4.0 * dim * 2.0**-24
        self.linear = 2.0**-23 * math.sqrt(dim)
        self.constant = dim * 2.0**-48 + 2.0**-24

    def products(self, s, e, p):
        """``x[s:e] @ x[p]`` from the copy, and a bound of its error (float64,
        in units of ``scale**2``)."""
        value = (self.rows[s:e] @ self.rows[p]).double()
        norm_p = float(self.norms[p])
        err = self.norms[s:e] * (self.relative * norm_p + self.linear)
        return value, err.add_(self.linear * norm_p + self.constant)

    def magnitude(self, s, e, p):
        """A bound of ``|x[s:e] @ x[p]|`` (float64, in units of ``scale**2``)."""
        value = (self.rows[s:e] @ self.rows[p]).double().abs_()
        norm_p = float(self.norms[p])
        value.add_(self.norms[s:e], alpha=self.relative * norm_p + self.linear)
        return value.add_(self.linear * norm_p + self.constant)


def _half_products_accumulate_in_float32(dim):
    """Whether float16 matrix-vector products of up to ``dim`` columns
    accumulate in float32 on the CPU (PyTorch's default; a float16
    accumulator would lose the ones added to 2048). Where they do not,
    BADGE uses float32 only.

    Checked once per process and width, on 8,192 rows and at least 2,048
    columns (32 MiB of float16); BADGE runs the check before its forward
    pass, so that its memory never comes on top of the factors'."""
    flag = getattr(torch._C, "_get_cpu_allow_fp16_reduced_precision_reduction", None)
    if flag is not None and flag():
        return False
    # (at least 2047 ones: fewer could all be lost within float16's spacing)
    return _half_probe(max(dim, _PROBE_COLUMNS))


@functools.cache
def _half_probe(dim, rows=8192):
    x = torch.ones(rows, dim, dtype=torch.float16)
    x[:, 0] = 2048.0
    v = torch.ones(dim, dtype=torch.float16)
    exact = 2048.0 + (dim - 1)
    out = (x @ v).double()
    return bool(((out - exact).abs() <= 2.0**-11 * exact + 1e-3).all())
