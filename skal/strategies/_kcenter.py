"""Exact k-center greedy selection with lazy distance updates.

The engine of :class:`skal.strategies.CoreSet` (see :func:`k_center_greedy`).
"""

from __future__ import annotations

import numpy as np
import torch

from ._blocks import _DENSE_ROWS, _sq, _unit_roundoff

# labelled centres every candidate is compared with up front, and
# candidates brought up to date at a time
_FIRST_CENTRES = 256
_TOP_ROWS = 16
# the most near-ties a step of the GPU loop (every candidate against each
# new centre) settles itself
_NEAR_TIES = 256


def k_center_greedy(candidates, centers, n, *, random_state, chunk_size=2048):
    """Greedy k-center selection of ``n`` candidates.

    Each step picks the candidate farthest from its nearest centre (the
    labelled set and the picks so far). The result is that of the textbook
    algorithm computed exactly: distances are computed in float32 (float64
    for float64 input) on embeddings centred on their mean, and whenever
    other candidates come within a rigorous bound of the rounding error of
    the farthest one, those candidates are scored again in float64 from the
    given embeddings.

    The work is lazy. Each candidate keeps its distance to the nearest of
    the centres it has been compared with, an upper bound of its distance to
    the nearest of all centres, since that can only be smaller. All
    candidates are first compared with (up to) 256 labelled centres spread
    over the labelled set; after that, only the candidates with the largest
    bounds are compared, in one matrix product, with the centres they have
    not seen, until the largest bound belongs to an up-to-date candidate.
    Candidates far from every new centre are thus never compared with it.

    On a GPU (candidates on another device than the CPU), where each of
    those steps would wait for the device, every candidate is compared with
    each new centre instead, and the loop never waits: each step scores the
    256 farthest candidates in float64 there and picks the farthest of those
    within the rounding bound of the top; only if more than 256 were within
    it does the lazy loop run instead.

    Parameters
    ----------
    candidates : torch.Tensor of shape (n_candidates, n_features)
        Float64, float32 or float16 (computed in float32); the work runs on
        their device.
    centers : torch.Tensor of shape (n_centers, n_features)
        Initial centres (the labelled set); may be empty.
    n : int
        How many candidates to select, ``1 <= n <= n_candidates``.
    random_state : numpy.random.RandomState
        Used only to draw the first centre when ``centers`` is empty.
    chunk_size : int, default=2048
        Rows (and centres) per block of the candidate-to-centre distances.

    Returns
    -------
    indices : ndarray of shape (n,)
        Distinct candidate indices in the order they were selected; ties go
        to the lowest index.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skal.strategies import k_center_greedy
    >>> points = torch.tensor([[0.0], [1.0], [2.0], [5.0], [9.0]])
    >>> k_center_greedy(
    ...     points, torch.tensor([[0.0]]), 3, random_state=np.random.RandomState(0)
    ... )
    array([4, 3, 2])
    """
    n_cand = candidates.shape[0]
    if not 1 <= n <= n_cand:
        raise ValueError(f"n must be between 1 and {n_cand}, got n={n}")
    if candidates.device.type != "cpu":
        picked = _LazyKCenter(candidates, centers, n, chunk_size).run_dense(n)
        if picked is not None:
            return picked
    return _LazyKCenter(candidates, centers, n, chunk_size).run(n, random_state)


class _LazyKCenter:
    """Exact k-center greedy with lazy distance updates (see k_center_greedy)."""

    def __init__(self, candidates, centers, n, chunk_size):
        self.x = candidates
        self.device = candidates.device
        self.dtype = (
            torch.float64 if candidates.dtype == torch.float64 else torch.float32
        )
        n_cand, dim = candidates.shape
        self.chunk_size = chunk_size
        starts = range(0, n_cand, chunk_size)
        total = sum(self._rows(slice(s, s + chunk_size)).sum(0) for s in starts)
        # distances do not change under a translation; centring on the mean
        # reduces float32 cancellation
        self.mean = total / n_cand
        self.mean64 = self.mean.to(torch.float64)
        self.sq_norms = torch.cat(
            [_sq(self._centred(slice(s, s + chunk_size))) for s in starts]
        )
        n_lab = centers.shape[0]
        # the labelled centres first, spread out so that a prefix of them is
        # a fair sample; the picks follow
        order = np.argsort(np.arange(n_lab) % _stride(n_lab), kind="stable")
        self.c64 = torch.empty(n_lab + n, dim, dtype=torch.float64, device=self.device)
        self.c = torch.empty(n_lab + n, dim, dtype=self.dtype, device=self.device)
        self.c_sq = torch.empty(n_lab + n, dtype=self.dtype, device=self.device)
        self.c64_sq = torch.empty(n_lab + n, dtype=torch.float64, device=self.device)
        for s in range(0, n_lab, chunk_size):
            part = torch.as_tensor(order[s : s + chunk_size], device=centers.device)
            rows = centers[part].to(self.device)
            self._add_centres(slice(s, s + len(part)), rows)
        self.n_lab = n_lab
        self.n_centres = n_lab
        self.values = torch.full(
            (n_cand,), float("inf"), dtype=self.dtype, device=self.device
        )
        self.done = torch.zeros(n_cand, dtype=torch.long, device=self.device)
        max_sq = float(self.sq_norms.max())
        max_sq += float(self.c_sq[:n_lab].max()) if n_lab else max_sq
        # twice a bound on the rounding error of a computed squared distance
        # (dot products of length dim, the centring, three additions)
        self.tol = 4.0 * (dim + 5) * _unit_roundoff(self.dtype, self.device) * max_sq
        self.exact = np.full(n_cand, np.nan)
        self.exact_done = np.full(n_cand, -1, dtype=np.intp)

    def _rows(self, index):
        return self.x[index].to(self.device, self.dtype)

    def _centred(self, index):
        return self._rows(index) - self.mean

    def _add_centres(self, where, rows):
        self.c64[where] = rows.to(torch.float64) - self.mean64
        self.c[where] = rows.to(self.dtype) - self.mean
        self.c_sq[where] = _sq(self.c[where])
        self.c64_sq[where] = _sq(self.c64[where])

    def _initial(self, n_centres):
        """Distances of every candidate to the first ``n_centres`` centres."""
        for s in range(0, self.values.shape[0], self.chunk_size):
            rows = slice(s, s + self.chunk_size)
            self.values[rows] = self._min_dist(rows, 0, n_centres)
        self.done.fill_(n_centres)

    def _min_dist(self, rows, first, last):
        """Nearest of centres ``first:last`` to candidates ``rows``."""
        x = self._centred(rows)
        sq = self.sq_norms[rows]
        best = None
        for s in range(first, last, self.chunk_size):
            e = min(s + self.chunk_size, last)
            dist = torch.addmm(self.c_sq[None, s:e], x, self.c[s:e].T, alpha=-2.0)
            dist = dist.add_(sq[:, None]).amin(1)
            best = dist if best is None else torch.minimum(best, dist)
        return best.clamp_(min=0.0)

    def _refresh(self, rows):
        """Bring candidates ``rows`` (a tensor of indices) up to date."""
        done = self.done[rows]
        # rows still missing labelled centres are updated apart from the
        # others, which only miss recent picks
        for part in (rows[done < self.n_lab], rows[done >= self.n_lab]):
            if part.numel():
                first = int(self.done[part].min())
                new = self._min_dist(part, first, self.n_centres)
                self.values[part] = torch.minimum(self.values[part], new)
        self.done[rows] = self.n_centres

    def run(self, n, random_state):
        picked = np.empty(n, dtype=np.intp)
        n_cand = self.values.shape[0]
        if self.n_lab:
            self._initial(min(self.n_lab, _FIRST_CENTRES))
        for step in range(n):
            if self.n_lab == 0 and step == 0:
                idx = int(random_state.randint(n_cand))
            else:
                idx = self._farthest()
            picked[step] = idx
            new = slice(self.n_centres, self.n_centres + 1)
            self._add_centres(new, self._rows([idx]))
            self.n_centres += 1
            self.values[idx] = -float("inf")
            if self.n_lab == 0 and step == 0:
                self._initial(1)
        return picked

    def run_dense(self, n):
        """Every candidate against each new centre, with no wait for the device.

        What a GPU does faster than the lazy loop, whose every step waits
        for the device to find the stale candidates. Each step scores the
        ``_NEAR_TIES`` candidates with the largest distances exactly, in
        float64 on the device, and picks the farthest of those within the
        rounding bound of the top. Returns None where the lazy loop must
        decide: no labelled centre (the first is drawn at random), or a step
        with more candidates than that within the bound.
        """
        n_cand = self.values.shape[0]
        if self.n_lab == 0:
            return None
        self._initial(self.n_lab)
        picked = torch.empty(n, dtype=torch.long, device=self.device)
        crowded = torch.zeros((), dtype=torch.bool, device=self.device)
        k = min(_NEAR_TIES, n_cand)
        block = max(self.chunk_size, _DENSE_ROWS)
        for step in range(n):
            top, idx = torch.topk(self.values, k)
            near = top >= top[0] - self.tol
            if k < n_cand:
                crowded |= near[-1]
            # in index order, so that exact ties go to the lowest index
            idx, order = torch.sort(idx)
            rows = self.x[idx].to(self.device, torch.float64) - self.mean64
            centres = slice(0, self.n_centres)
            exact = _exact_min(rows, self.c64[centres], self.c64_sq[centres])
            exact.masked_fill_(~near[order], -float("inf"))
            new = idx.index_select(0, exact.argmax().reshape(1))
            picked[step : step + 1] = new
            centre = slice(self.n_centres, self.n_centres + 1)
            self._add_centres(centre, self._rows(new))
            self.n_centres += 1
            self.values.index_fill_(0, new, -float("inf"))
            for s in range(0, n_cand, block):
                part = self.values[s : s + block]
                dist = self._min_dist(slice(s, s + block), centre.start, centre.stop)
                torch.minimum(part, dist, out=part)
        if bool(crowded):
            return None
        return picked.cpu().numpy().astype(np.intp)

    def _farthest(self):
        n_cand = self.values.shape[0]
        k = min(_TOP_ROWS, n_cand)
        while True:
            top, idx = torch.topk(self.values, k)
            # every candidate that could be the farthest is among the top k
            # once they are up to date and the k-th value is below the first
            # by more than tol (the others' values bound their distances)
            bound = float(top[-1])
            stale = self.done[idx] < self.n_centres
            if bool(stale.any()):
                self._refresh(idx[stale])
                top, order = torch.sort(self.values[idx], descending=True)
                idx = idx[order]
                if k == n_cand or bound < float(top[0]) - self.tol:
                    break
                continue
            if k == n_cand or bound < float(top[0]) - self.tol:
                break
            k = min(2 * k, n_cand)
        close = top >= top[0] - self.tol
        near = idx[close].cpu().numpy()
        if len(near) == 1:
            return int(near[0])
        # the exact distance of each is within tol / 2 of its computed one:
        # score them all in float64, in one product with the centres (which
        # costs about what one row does); exact ties go to the lowest index
        near = np.sort(near)
        return int(near[np.argmax(self._exact(near))])

    def _exact(self, idx):
        """Float64 nearest-centre squared distances of candidates ``idx``.

        Kept per candidate with the number of centres they cover, so a
        candidate that stays near the top is only compared with new picks.
        """
        done = self.exact_done[idx]
        for first in np.unique(done):
            group = idx[done == first]
            index = torch.as_tensor(group, device=self.device)
            rows = self.x[index].to(self.device, torch.float64) - self.mean64
            part = slice(max(first, 0), self.n_centres)
            best = _exact_min(rows, self.c64[part], self.c64_sq[part]).cpu().numpy()
            if first >= 0:
                best = np.minimum(best, self.exact[group])
            self.exact[group] = best
            self.exact_done[group] = self.n_centres
        return self.exact[idx]


def _exact_min(rows, centers, center_sq):
    """Float64 squared distance of each row to its nearest centre (a tensor)."""
    row_sq = _sq(rows)
    best = torch.full_like(row_sq, float("inf"))
    for s in range(0, centers.shape[0], 4096):
        c = centers[s : s + 4096]
        dist = torch.addmm(center_sq[None, s : s + 4096], rows, c.T, alpha=-2.0)
        best = torch.minimum(best, dist.add_(row_sq[:, None]).amin(1))
    return best.clamp_(min=0.0)


def _stride(n_lab):
    return max(1, -(-n_lab // _FIRST_CENTRES))
