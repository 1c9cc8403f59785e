"""k-means++ seeding on factored gradient embeddings ``a (x) h``.

The engine of :class:`skal.strategies.BADGE` (see :func:`kmeans_pp_gradient`).
"""

from __future__ import annotations

import numpy as np
import torch

from ._blocks import (
    _by_rows,
    _computed,
    _computed_dtype,
    _half_products_accumulate_in_float32,
    _HalfRows,
    _matmul_rows,
    _non_negative,
    _products_at,
    _row_slices,
    _row_sq,
    _sq,
    _unit_roundoff,
)

# rows of one class that the seeding on the CPU skips at once
_BLOCK = 256


def kmeans_pp_gradient(a, h, n, *, random_state):
    """k-means++ seeding on the gradient embeddings ``a (x) h``.

    The picks are those of computing every squared distance
    ``|a|^2 |h|^2 + |a'|^2 |h'|^2 - 2 (a.a') (h.h')`` at every step; the
    work is not. On the CPU, when every row of ``a`` has at most one
    negative entry (BADGE's rows are probabilities minus the one-hot vector
    of the predicted class ``k``), the rows are numbered by ``k`` and a step
    computes:

    - for the rows of the new point's class, ``a.a'`` and ``h.h'`` from
      float16 copies of ``a`` and ``h`` in that order (contiguous
      matrix-vector products), with a bound of their error; the exact
      distance only where it may be below the current one. This needs
      float16 products to accumulate in float32 (PyTorch's default on CPUs),
      which is checked at run time; otherwise float32 products are used;
    - for the rows of other classes, only the distances that may be below
      their current value. For rows of different classes, ``a.a'`` is at
      most the product of the norms of the rows' positive parts (their
      negative entries are at different classes), and ``|h.h'| <=
      |h||h'|``; with a margin for rounding, this bounds the distance from
      below by a product of one number per row and one per new point.
      Blocks of up to 256 rows of one class are skipped at once by the
      largest such number in the block and the smallest gap between the
      rows' bound and current distance; the rows of the other blocks are
      tested one by one.

    ``a`` and ``h`` are not modified; the float16 copies take ``2 N (C +
    D)`` bytes (and for embeddings of either sign, a copy of ``a`` by
    columns ``4 N C``). Rows of any other form, and embeddings of either sign, work
    too, with weaker bounds. On other devices (a GPU) every distance is computed at
    every step, in two matrix-vector products, and the loop does not wait
    for the device.

    Parameters
    ----------
    a : torch.Tensor of shape (n_samples, n_classes)
        Float64 or float32; float16 and bfloat16 are converted to float32.
    h : torch.Tensor of shape (n_samples, n_features), same device as ``a``
        Float64 or float32, or float16 or bfloat16 to save memory: those are
        read in float32, 4,096 rows at a time, where they are used, so the
        picks are those of float32 on their values.
    n : int
        How many samples to select, ``1 <= n <= n_samples``.
    random_state : numpy.random.RandomState
        Source of the D^2 draws (one uniform number per step).

    Returns
    -------
    indices : ndarray of shape (n,)
        Distinct indices in the order they were chosen.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skal.strategies import kmeans_pp_gradient
    >>> a = torch.tensor([[0.5, -0.5], [0.1, -0.1], [0.0, 0.0]])
    >>> h = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    >>> kmeans_pp_gradient(a, h, 1, random_state=np.random.RandomState(0))
    array([0])
    """
    n_samples = a.shape[0]
    if not 1 <= n <= n_samples:
        raise ValueError(f"n must be between 1 and {n_samples}, got n={n}")
    a = _computed(a)  # N x C: converted; h is read in float32 as it is used
    if a.device.type != "cpu":
        state = random_state.get_state()
        picked = _GradientSeeding(a, h, bounds=False).run_dense(n, random_state)
        if picked is not None:
            return picked
        # a step found every distance zero: the step-by-step loop draws
        # differently there
        random_state.set_state(state)
        return _GradientSeeding(a, h, bounds=False).run(n, random_state)
    if _has_class_form(a):
        return _ClassSortedSeeding(a, h).run(n, random_state)
    return _GradientSeeding(a, h).run(n, random_state)


def _d2_draw(min_dist, picked, step, random_state):
    """The index drawn with probability proportional to ``min_dist``, or
    uniformly among the samples not in ``picked[:step]`` if all are zero."""
    cumsum = min_dist.cumsum(0, dtype=torch.float64)
    total = float(cumsum[-1])
    n = min_dist.shape[0]
    if total > 0:
        target = torch.tensor(
            random_state.random_sample() * total,
            dtype=torch.float64,
            device=cumsum.device,
        )
        return min(int(torch.searchsorted(cumsum, target, right=True)), n - 1)
    rest = np.setdiff1d(np.arange(n), picked[:step])
    return int(rest[random_state.randint(len(rest))])


def _first_pick(g2, random_state):
    """The sample with the largest ``|g|^2``, or a uniform draw if all are zero."""
    if bool(g2.max() > 0):
        return int(g2.argmax())
    return int(random_state.randint(g2.shape[0]))


class _GradientSeeding:
    """k-means++ seeding on factored gradient embeddings, rows in any order.

    The GPU loop, and the CPU loop for rows of ``a`` without BADGE's class
    structure (see ``_ClassSortedSeeding`` for those).
    """

    def __init__(self, a, h, *, bounds=True):
        self.a, self.h = a, h
        self.n = a.shape[0]
        a2, h2 = _row_sq(a), _row_sq(h)
        self.g2 = a2 * h2
        self.ah = self.g2.sqrt()
        self.h_norm = h2.sqrt()
        self.rel_err = _distance_rel_err(a, h)
        # embeddings after a ReLU have h.h' >= 0: then a.a' < 0 can only add
        self.non_negative = _non_negative(h) if bounds else False

    def run(self, n, random_state):
        """Step by step, computing ``h.h'`` only where a distance may shrink."""
        min_dist = torch.full_like(self.g2, float("inf"))
        picked = np.empty(n, dtype=np.intp)
        for step in range(n):
            if step == 0:
                idx = _first_pick(self.g2, random_state)
            else:
                idx = _d2_draw(min_dist, picked, step, random_state)
            picked[step] = idx
            self._update(min_dist, idx)
            min_dist[idx] = 0.0
        return picked

    def run_dense(self, n, random_state):
        """Every distance at every step, with no wait for the device.

        Returns None if a step found every distance zero (the caller then
        runs the step-by-step loop).
        """
        g2, a, h = self.g2, self.a, self.h
        if not bool(g2.max() > 0):
            return None
        min_dist = torch.full_like(g2, float("inf"))
        picked = torch.empty(n, dtype=torch.long, device=g2.device)
        idx = g2.argmax().reshape(1)
        degenerate = torch.zeros((), dtype=torch.bool, device=g2.device)
        for step in range(n):
            if step:
                cumsum = min_dist.cumsum(0, dtype=torch.float64)
                total = cumsum[-1:]
                degenerate |= total[0] <= 0
                target = total * random_state.random_sample()
                idx = torch.searchsorted(cumsum, target, right=True)
                idx.clamp_(max=self.n - 1)
            picked[step : step + 1] = idx
            aa = (a @ a.index_select(0, idx).T).squeeze(1)
            hh = _matmul_rows(h, h.index_select(0, idx).T).squeeze(1)
            dist = torch.addcmul(g2, aa, hh, value=-2.0)
            dist.add_(g2.index_select(0, idx)).clamp_(min=0.0)
            torch.minimum(min_dist, dist, out=min_dist)
            min_dist.index_fill_(0, idx, 0.0)
        if bool(degenerate):
            return None
        return picked.cpu().numpy().astype(np.intp)

    def _update(self, min_dist, idx):
        """Lower ``min_dist`` to the distances to sample ``idx``."""
        g2, a, h = self.g2, self.a, self.h
        margin = torch.add(g2, g2[idx]).addcmul_(self.ah, self.ah[idx], value=2.0)
        margin.mul_(self.rel_err)
        aa = a @ a[idx]
        coupling = aa.clamp(min=0.0) if self.non_negative else aa.abs()
        # the bound's own rounding is covered by scaling the coupling term
        # by 1 + rel_err (rel_err is many units of roundoff)
        scale = -2.0 * (1.0 + self.rel_err) * float(self.h_norm[idx])
        gap = torch.addcmul(g2 + g2[idx], coupling, self.h_norm, value=scale)
        rows = torch.nonzero(gap.sub_(margin) < min_dist).flatten()
        if rows.numel() > self.n // 4:
            dist = torch.addcmul(g2, aa, _matmul_rows(h, h[idx]), value=-2.0)
            dist.add_(g2[idx]).clamp_(min=0.0)
            torch.minimum(min_dist, dist, out=min_dist)
        elif rows.numel():
            hh = _products_at(h, rows, h[idx])
            dist = torch.addcmul(g2[rows], aa[rows], hh, value=-2.0)
            dist.add_(g2[idx]).clamp_(min=0.0)
            min_dist[rows] = torch.minimum(min_dist[rows], dist)


def _distance_rel_err(a, h):
    """Twice a bound on the rounding error of a computed distance, relative
    to ``g2 + g2' + 2 |a||a'||h||h'|`` (in the coarser of the two factors'
    arithmetic)."""
    unit = max(_unit_roundoff(_computed_dtype(x.dtype), x.device) for x in (a, h))
    return 4.0 * (a.shape[1] + h.shape[1] + 8) * unit


def _has_class_form(a):
    """Whether each row of ``a`` has at most one negative entry (C >= 2)."""
    if a.shape[1] < 2:
        return False
    return not any(
        bool((a[rows] < 0).sum(1).gt(1).any()) for rows in _row_slices(a.shape[0])
    )


class _ClassSortedSeeding:
    """k-means++ seeding on CPU factors whose rows have BADGE's class form.

    Each row of ``a`` has at most one negative entry; its class ``k`` is the
    position of its smallest entry. The rows are numbered by class and,
    within a class, by decreasing ``w = |a+| |h|`` (``a+`` the positive part
    of the row), in blocks of at most ``_BLOCK`` rows; ``a`` and ``h`` stay
    as they are, float16 copies are kept in that order.

    - Rows of the new point's class: ``a.a'`` and ``h.h'`` from the float16
      copies (contiguous products), with a bound of their error; the exact
      distance where it may be below the current one.
    - Rows of other classes, by blocks: ``a.a' <= |a+| |a'+|`` (their
      negative entries are at different classes) and ``|h.h'| <= |h||h'|``,
      so with ``c = |a'+| |h'|`` a row's distance is at least ``g2 + g2' - 2
      w c``, less a margin for rounding (for embeddings of either sign,
      ``|a.a'| <= |a+||a'+| + |a[k]| max a'+ + max a+ |a'[k']|`` adds two
      such products). A block is skipped when the bound with its largest
      ``w`` (and ``|a||h|`` in the margin) stays above the smallest gap
      ``g2 - min_dist`` of its rows, kept up to date (as a lower bound) for
      each block.
    - Rows of the other blocks, one by one, with the tighter bounds of
      ``_row_coupling`` (two terms of ``a.a'`` exact); the exact distance
      for those that fail.

    The D^2 draw runs over the distances in the caller's order, so the picks
    are those of computing every distance at every step.
    """

    def __init__(self, a, h):
        n, n_classes = a.shape
        self.n = n
        self.a, self.h = a, h
        self.rel_err = _distance_rel_err(a, h)
        self.signed = not _non_negative(h)
        a2, h2 = _row_sq(a), _row_sq(h)
        g2 = a2 * h2
        self.first = int(g2.argmax()) if bool(g2.max() > 0) else None
        # |a+|, raised by a bound of its rounding and of squares lost to
        # underflow
        eps = 4.0 * (n_classes + 2) * _unit_roundoff(a.dtype, a.device)
        floor = 2.0 * n_classes * torch.finfo(a.dtype).tiny
        pos = _by_rows(lambda block: _sq(block.clamp(min=0.0)), a)
        pos_norm = pos.mul_(1.0 + eps).add_(floor).sqrt_()
        h_norm = h2.sqrt_()
        k = a.argmin(1)
        # position -> the caller's index, and back
        order = torch.from_numpy(
            np.lexsort(((-(pos_norm * h_norm)).double().numpy(), k.numpy()))
        )
        self.order = order
        self.inv = torch.empty_like(order)
        self.inv[order] = torch.arange(n)
        self.g2, self.h_norm = g2[order], h_norm[order]
        self.pos_norm = pos_norm[order]
        # float64, as the bounds use them: (1 - rel_err) g2 and |a||h|
        self.base = self.g2.double() * (1.0 - self.rel_err)
        self.ah = self.g2.double().sqrt()
        # |a|, raised by what underflow may have lost from a2
        self.a_norm = a2[order].add_(n_classes * torch.finfo(a.dtype).tiny).sqrt_()
        # a[k] of each row, and a bound of the sum of its other squares
        self.own = a.gather(1, k[:, None]).squeeze(1)[order]
        rest = torch.cat(
            [_sq(a[rows].scatter(1, k[rows, None], 0.0)) for rows in _row_slices(n)]
        )
        self.rest_up = rest.mul_(1.0 + eps).add_(floor)[order]
        self.a_columns = None
        if self.signed:
            self.top = _by_rows(lambda block: block.clamp(min=0.0).amax(1), a)[order]
            # the weaker block bounds leave most rows to be tested one by one:
            # the columns of a in this order, each contiguous
            self.a_columns = a.new_empty((n_classes, n))
            for rows in _row_slices(n):
                self.a_columns[:, rows] = a[order[rows]].T
        self._blocks(k[order], n_classes)
        self.half = None
        if _half_products_accumulate_in_float32(max(n_classes, h.shape[1])):
            self.half = (
                _HalfRows(a, self.a_norm, order),
                _HalfRows(h, self.h_norm, order),
            )

    def _blocks(self, k, n_classes):
        counts = torch.bincount(k, minlength=n_classes).numpy()
        ends = np.cumsum(counts)
        starts = ends - counts
        per_class = -(-counts // _BLOCK)
        b_class = np.repeat(np.arange(n_classes), per_class)
        self.first_block = np.concatenate([[0], np.cumsum(per_class)])
        b_start = starts[b_class] + _BLOCK * (
            np.arange(len(b_class)) - self.first_block[b_class]
        )
        b_len = np.minimum(_BLOCK, ends[b_class] - b_start)
        self.class_start, self.class_end = starts, ends
        self.b_start = torch.from_numpy(b_start)
        self.b_len = torch.from_numpy(b_len)
        self.row_block = torch.repeat_interleave(torch.arange(len(b_class)), self.b_len)
        self.b_class = b_class
        self.b_class_t = torch.from_numpy(b_class)
        self.class_count = torch.from_numpy(counts)

        def block_max(v):
            out = torch.zeros(len(b_class), dtype=torch.float64)
            return out.scatter_reduce_(
                0, self.row_block, v.double(), "amax", include_self=False
            )

        h_norm = self.h_norm.double()
        self.w_max = block_max(self.pos_norm.double() * h_norm)
        self.ah_max = block_max(self.ah)
        if self.signed:
            self.own_max = block_max(self.own.double().abs() * h_norm)
            self.top_max = block_max(self.top.double() * h_norm)
        # the smallest (1 - rel_err) g2 - min_dist of each block, or a lower
        # bound of it
        self.gap = torch.full((len(b_class),), -float("inf"), dtype=torch.float64)

    def run(self, n, random_state):
        min_dist = torch.full_like(self.g2, float("inf"))
        # the same distances in the caller's order, for the draw: written
        # where min_dist is, instead of gathered from it at every step
        self.drawn = torch.full_like(self.g2, float("inf"))
        picked = np.empty(n, dtype=np.intp)
        for step in range(n):
            if step == 0:
                idx = self.first
                if idx is None:
                    idx = int(random_state.randint(self.n))
            else:
                idx = _d2_draw(self.drawn, picked, step, random_state)
            picked[step] = idx
            p = int(self.inv[idx])
            self._update(min_dist, p)
            min_dist[p] = 0.0
            self.drawn[idx] = 0.0
        return picked

    def _block_coupling(self, p):
        """For each block, a bound of ``a.a'`` as it enters the distance,
        over ``|h'|``, for its rows (of other classes than row ``p``)."""
        out = self.w_max * float(self.pos_norm[p])
        if self.signed:
            out += self.own_max * float(self.top[p])
            out += self.top_max * float(self.own[p].abs())
        return out

    def _row_coupling(self, p, rows):
        """For ``rows`` of other classes than row ``p``'s (class ``k'``), a
        bound of ``a.a'`` as it enters the distance (its positive part, or
        for embeddings of either sign its magnitude) times ``|h|``.

        ``a.a'`` is ``a[k] a'[k] + a[k'] a'[k']`` (exact here, one column of
        ``a`` read) plus the sum over the other classes, where both rows are
        non-negative: between 0 and the product of the two rows' norms over
        those classes.
        """
        kc = int(self.b_class[int(self.row_block[p])])
        center = self.a[int(self.order[p])]
        if isinstance(rows, slice):  # every row: no gathers
            col = self.a[self.order, kc] if self.a_columns is None else None
            col = self.a_columns[kc] if col is None else col
            cen = center.repeat_interleave(self.class_count)
        else:
            col = self.a[self.order[rows], kc]  # a[k'] of each row
            cen = center[self.b_class_t[self.row_block[rows]]]  # a'[k] for each
        base = torch.mul(self.own[rows], cen).addcmul_(col, center[kc])
        row_rest = torch.sub(self.rest_up[rows], col * col).clamp_(min=0.0).sqrt_()
        rest_c = float(self.rest_up[p])
        high = torch.sub(rest_c, cen * cen).clamp_(min=0.0).sqrt_().mul_(row_rest)
        high.add_(base)
        # the bounds' own rounding: their terms are at most |a||a'| (and the
        # smallest normal number where products underflow)
        slack = self.a_norm[rows] * (self.rel_err * float(self.a_norm[p]))
        slack.add_(torch.finfo(slack.dtype).tiny)
        if self.signed:
            coupling = torch.maximum(base.sub_(slack).abs_(), high.add_(slack).abs_())
        else:
            coupling = high.add_(slack).clamp_(min=0.0)
        return coupling.double().mul_(self.h_norm[rows])

    def _update(self, min_dist, p):
        """Lower ``min_dist`` to the distances to (sorted) row ``p``."""
        rel = self.rel_err
        kc = int(self.b_class[int(self.row_block[p])])
        s, e = int(self.class_start[kc]), int(self.class_end[kc])
        b0, b1 = int(self.first_block[kc]), int(self.first_block[kc + 1])
        g2c, ahc = float(self.g2[p]), float(self.ah[p])
        scale = 2.0 * (1.0 + rel) * float(self.h_norm[p])
        # blocks of other classes whose rows may come closer
        low = self.gap + (1.0 - rel) * g2c
        low.sub_(self.ah_max, alpha=2.0 * rel * ahc)
        low.sub_(self._block_coupling(p), alpha=scale)
        low[b0:b1] = 0.0
        blocks = torch.nonzero(low < 0).flatten()
        if blocks.numel():
            lens = self.b_len[blocks]
            size = int(lens.sum())
            if size > (self.n - e + s) // 2:
                rows = slice(0, self.n)  # most blocks: every row
            else:
                rows = torch.repeat_interleave(
                    self.b_start[blocks] - (lens.cumsum(0) - lens), lens
                ).add_(torch.arange(size))
            bound = torch.add(self.base[rows], self.ah[rows], alpha=-2.0 * rel * ahc)
            bound.add_((1.0 - rel) * g2c)
            bound.sub_(self._row_coupling(p, rows), alpha=scale)
            if isinstance(rows, slice):
                bound[s:e] = float("inf")  # its own class: below
                near = torch.nonzero(bound < min_dist).flatten()
            else:
                near = rows[bound < min_dist[rows]]
            if near.numel() + e - s > self.n // 4:
                self._exact(min_dist, p)
                return
            if near.numel():
                self._exact_rows(min_dist, p, near)
            self._refresh_gap(min_dist, rows)
        if self.half is None:
            self._exact_rows(min_dist, p, torch.arange(s, e))
            self._refresh_gap(min_dist, slice(s, e))
            return
        # its own class: a.a' and h.h' from the float16 copies, within
        # their error bounds, then exactly where the distance may shrink
        half_a, half_h = self.half
        coupling = half_a.magnitude(s, e, p).mul_(half_h.magnitude(s, e, p))
        units = half_a.scale**2 * half_h.scale**2
        bound = torch.add(self.base[s:e], self.ah[s:e], alpha=-2.0 * rel * ahc)
        bound.add_((1.0 - rel) * g2c).sub_(coupling, alpha=2.0 * (1.0 + rel) / units)
        near = torch.nonzero(torch.lt(bound, min_dist[s:e])).flatten().add_(s)
        if near.numel():
            self._exact_rows(min_dist, p, near)
        self._refresh_gap(min_dist, slice(s, e))

    def _exact_rows(self, min_dist, p, rows):
        """The distances of ``rows`` (positions, an index tensor) to ``p``."""
        at, q = self.order[rows], int(self.order[p])
        aa = _products_at(self.a, at, self.a[q])
        hh = _products_at(self.h, at, self.h[q])
        dist = torch.addcmul(self.g2[rows], aa, hh, value=-2.0)
        dist.add_(self.g2[p]).clamp_(min=0.0)
        dist = torch.minimum(min_dist[rows], dist)
        min_dist[rows] = dist
        self.drawn[at] = dist

    def _exact(self, min_dist, p):
        """Every distance to ``p``."""
        q = int(self.order[p])
        aa = (self.a @ self.a[q]).index_select(0, self.order)
        hh = _matmul_rows(self.h, self.h[q]).index_select(0, self.order)
        dist = torch.addcmul(self.g2, aa, hh, value=-2.0)
        dist.add_(self.g2[p]).clamp_(min=0.0)
        torch.minimum(min_dist, dist, out=min_dist)
        self.drawn = min_dist.index_select(0, self.inv)
        self._refresh_gap(min_dist, slice(0, self.n))

    def _refresh_gap(self, min_dist, rows):
        gap = torch.sub(self.base[rows], min_dist[rows])
        self.gap.scatter_reduce_(
            0, self.row_block[rows], gap, "amin", include_self=False
        )
