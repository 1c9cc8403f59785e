"""Diversity baselines: core-set (k-center greedy) and BADGE.

Both select a batch jointly, so they implement ``select`` and have no
per-sample utility. Both work in the space of the penultimate embedding of a
skorch network (the input of its last ``nn.Linear``), computed on the net's
device. For a classifier that is not a skorch network (a logistic regression,
say), the embedding is the input as the classifier sees it (after the
pipeline's earlier steps), flattened, and the work happens on the CPU; for a
multinomial logistic regression this makes BADGE's gradient embedding the
exact gradient of the log-loss with respect to the weights.

Neither ever builds an N x N distance matrix nor BADGE's N x (D*C) gradient
matrix: core-set keeps one vector of N distances and brings candidates up to
date lazily, in matrix products, only when they may be the next pick; BADGE
factors the squared distance between two gradient embeddings ``a (x) h`` and
``a' (x) h'`` as ``|a|^2 |h|^2 + |a'|^2 |h'|^2 - 2 (a.a') (h.h')``.
"""

from __future__ import annotations

import functools
import math
from functools import partial
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from skorch import NeuralNet

from .._data import n_samples
from .._utils import argmax_labels
from .base import QueryStrategy

# k-center greedy: labelled centres every candidate is compared with up
# front, and candidates brought up to date at a time
_FIRST_CENTRES = 256
_TOP_ROWS = 16
# rows at a time where a temporary of their size is made
_ROWS = 4096
# candidates per block when all are compared with one new centre (on a GPU),
# and the most near-ties a step of that loop settles itself
_DENSE_ROWS = 65536
_NEAR_TIES = 256
# the fewest columns the float16 accumulation check multiplies
_PROBE_COLUMNS = 2048
# rows of one class that BADGE's seeding on the CPU skips at once
_BLOCK = 256
_EMBEDDING_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class CoreSet(QueryStrategy):
    """Core-set selection by k-center greedy (Sener & Savarese, 2018).

    The labelled samples are the initial centres. Each step adds the
    candidate farthest (Euclidean distance in the penultimate embedding) from
    its nearest centre, and makes it a centre. The returned indices are in
    the order of selection.

    The selection is exact (see :func:`k_center_greedy`): the same picks as
    the textbook algorithm in float64, at a fraction of its cost, because a
    candidate's distance to its nearest centre is only brought up to date
    when it may be the next pick. Memory: the N x D embeddings (4 bytes per
    number, 2 with ``embedding_dtype="float16"``), the labelled set and the
    picks as centres ((L + n) x D numbers in float32 and float64, 12 bytes
    each), five vectors of N numbers, and blocks of ``chunk_size`` x
    ``chunk_size``; never N x N.

    If the labelled set is empty (possible only when calling ``select``
    directly), the first centre is drawn uniformly at random from the
    candidates.

    For a skorch network the embedding is the input of its last
    ``nn.Linear`` (see :meth:`skal.NeuralNetClassifier.embed`); for any
    other classifier it is the input the classifier sees, flattened.

    Parameters
    ----------
    chunk_size : int, default=2048
        Rows per block when distances to the labelled set are computed.
    embedding_dtype : {"float32", "float16"}, default="float32"
        How the N x D embeddings are stored. ``"float16"`` halves their
        memory; distances are still computed in float32 (exactly, on the
        float16-rounded embeddings, so picks can differ from float32's).

    See Also
    --------
    k_center_greedy : The selection on given embeddings.

    References
    ----------
    .. [1] O. Sener and S. Savarese, "Active Learning for Convolutional Neural
       Networks: A Core-Set Approach", ICLR 2018.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> X = np.random.RandomState(0).randn(200, 5)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = skal.NeuralNetClassifier(skal.nets.MLP, max_epochs=2)
    >>> learner = skal.ActiveLearner(net, strategy="coreset", random_state=0)
    >>> learner = learner.fit(X[:20], y[:20])
    >>> learner.query(X[20:], n=5).shape
    (5,)
    """

    per_sample = False
    _parameter_constraints = {
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "embedding_dtype": [StrOptions(set(_EMBEDDING_DTYPES))],
    }

    def __init__(self, chunk_size=2048, embedding_dtype="float32"):
        self.chunk_size = chunk_size
        self.embedding_dtype = embedding_dtype

    def select(self, context, X, n):
        self.validate(context.estimator)
        candidates = _embedding(context, X, _EMBEDDING_DTYPES[self.embedding_dtype])
        centers = _embedding(context, context.X_labeled).to(candidates.device)
        return k_center_greedy(
            candidates,
            centers,
            n,
            random_state=context.random_state,
            chunk_size=int(self.chunk_size),
        )


class BADGE(QueryStrategy):
    """Batch active learning by diverse gradient embeddings (Ash et al., 2020).

    Each candidate's gradient embedding is the gradient of the cross-entropy
    at its predicted label ``y_hat`` with respect to the weight of the last
    linear layer, ``g = (p - onehot(y_hat)) (x) h`` (``h`` the penultimate
    embedding, ``p`` the predicted probabilities). As in the authors' code,
    the bias gradient (``p - onehot(y_hat)``) is not part of the embedding.
    The batch is chosen by k-means++ seeding on these embeddings: the first
    point has the largest ``|g|``, each further one is drawn with probability
    proportional to its squared distance to the nearest point chosen so far
    (uniformly among the rest if every distance is zero).

    The N x (C * D) matrix of embeddings is never formed: only ``a = p -
    onehot(y_hat)`` (N x C) and ``h`` (N x D) are kept, and squared distances
    come from ``|a|^2 |h|^2 + |a'|^2 |h'|^2 - 2 (a.a') (h.h')``, so each
    seeding step costs at most O(N (C + D)). On the CPU a step computes the
    exact distance only for the samples whose distance to the new point may
    be below their current one, found from bounds (see
    :func:`~skal.strategies.kmeans_pp_gradient`); on a GPU it computes every
    distance without waiting for the device. The picks are those of
    computing every distance.

    For a classifier that is not a skorch network, ``h`` is the input as the
    classifier sees it and ``p`` its ``predict_proba``.

    Memory: the two factors, ``a`` (N x C, 4 bytes per number) and ``h``
    (N x D, 4 bytes per number, 2 with ``embedding_dtype="float16"``), and
    on the CPU float16 copies of both in class order and about 100 bytes
    per candidate; never the N x C D matrix.

    Parameters
    ----------
    embedding_dtype : {"float32", "float16"}, default="float32"
        How the N x D penultimate embeddings ``h`` are stored.
        ``"float16"`` halves their memory; distances are still computed in
        float32 (exactly as on float32 embeddings, but on the
        float16-rounded ones, so picks can differ from float32's).

    References
    ----------
    .. [1] J. T. Ash, C. Zhang, A. Krishnamurthy, J. Langford and A. Agarwal,
       "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower
       Bounds", ICLR 2020.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> X = np.random.RandomState(0).randn(200, 5)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = skal.NeuralNetClassifier(skal.nets.MLP, max_epochs=2)
    >>> learner = skal.ActiveLearner(net, strategy="badge", random_state=0)
    >>> learner = learner.fit(X[:20], y[:20])
    >>> learner.query(X[20:], n=5).shape
    (5,)
    """

    per_sample = False
    _parameter_constraints = {
        "embedding_dtype": [StrOptions(set(_EMBEDDING_DTYPES))],
    }

    def __init__(self, embedding_dtype="float32"):
        self.embedding_dtype = embedding_dtype

    def select(self, context, X, n):
        self.validate(context.estimator)
        # float32: the embeddings as the network returns them
        dtype = None if self.embedding_dtype == "float32" else torch.float16
        if _device(context).type == "cpu":
            # the seeding's float16 check, cached, while memory is low
            _half_products_accumulate_in_float32(_PROBE_COLUMNS)
        a, h = gradient_embedding_factors(context, X, dtype=dtype)
        return kmeans_pp_gradient(a, h, n, random_state=context.random_state)


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


def _by_rows(fn, x, rows=_ROWS):
    """``fn`` applied to ``rows`` rows of ``x`` at a time, results
    concatenated: no temporary the size of ``x`` (one empty block if ``x``
    has no row, so the result has ``fn``'s dtype)."""
    return torch.cat([fn(x[s : s + rows]) for s in range(0, max(len(x), 1), rows)])


def _products_at(x, index, v):
    """``x[index] @ v``, gathering ``_ROWS`` rows at a time (``index`` may
    name a large share of ``x``)."""
    v = _computed(v)
    return _by_rows(lambda part: _computed(x.index_select(0, part)) @ v, index)


def _exact_min(rows, centers, center_sq):
    """Float64 squared distance of each row to its nearest centre (a tensor)."""
    row_sq = _sq(rows)
    best = torch.full_like(row_sq, float("inf"))
    for s in range(0, centers.shape[0], 4096):
        c = centers[s : s + 4096]
        dist = torch.addmm(center_sq[None, s : s + 4096], rows, c.T, alpha=-2.0)
        best = torch.minimum(best, dist.add_(row_sq[:, None]).amin(1))
    return best.clamp_(min=0.0)


def _sq(x):
    return (x * x).sum(1)


def _row_sq(x):
    """``_sq`` in blocks of rows; float16 and bfloat16 rows in float32."""
    return _by_rows(lambda block: _sq(_computed(block)), x)


# stored in these to save memory, computed in float32
_LOW_PRECISION = (torch.float16, torch.bfloat16)


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


def _stride(n_lab):
    return max(1, -(-n_lab // _FIRST_CENTRES))


def _unit_roundoff(dtype, device):
    eps = torch.finfo(dtype).eps / 2
    if (
        dtype == torch.float32
        and device.type == "cuda"
        and torch.get_float32_matmul_precision() != "highest"
    ):
        eps = 2.0**-11
    return eps


def gradient_embedding_factors(context, X, *, dtype=None):
    """The two factors of BADGE's gradient embeddings.

    The gradient of the cross-entropy at the predicted label with respect to
    the last layer's weight ``W`` (shape C x D) is the outer product
    ``a h^T`` with ``a = p - onehot(argmax p)`` and ``h`` the penultimate
    embedding; flattened row-major it is ``(a[:, :, None] * h[:, None,
    :]).reshape(N, C * D)``.

    Parameters
    ----------
    context : QueryContext
    X : array-like of shape (n_samples, ...)
    dtype : torch.dtype or None, default=None
        The dtype ``h`` is stored in, batch by batch (``torch.float16``
        halves its memory); None keeps the embeddings' own.

    Returns
    -------
    a : torch.Tensor of shape (n_samples, n_classes)
    h : torch.Tensor of shape (n_samples, n_features_embedding)
        Both on the net's device (CPU for other classifiers).
    """
    factors = partial(_factors, dtype=dtype)
    parts = [p for p in context.map_rows(factors, X) if p[0].shape[0]]
    device = _device(context)
    if not parts:
        return factors(context, X)
    if len(parts) == 1:
        return parts[0][0].to(device), parts[0][1].to(device)
    return (
        torch.cat([a.to(device) for a, _ in parts]),
        torch.cat([h.to(device) for _, h in parts]),
    )


def _factors(context, X, dtype=None):
    if isinstance(context.estimator, NeuralNet):
        batches = context.estimator.iter_features(X, embedding=True)
        a, h = _Rows(n_samples(X)), _Rows(n_samples(X))
        for logits, feats in batches:
            a.add(_proba_minus_onehot(torch.softmax(logits.float(), dim=1)))
            emb = feats["embedding"]
            h.add(emb if dtype is None else emb.to(dtype))
        device = context.estimator.device
        return a.result(device), h.result(device)
    proba = torch.as_tensor(context.predict_proba(X))
    h = _embedding_part(context, X).to(proba.dtype if dtype is None else dtype)
    return _proba_minus_onehot(proba), h


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


def _non_negative(x):
    """Whether every entry of ``x`` is >= 0 (no temporary of its size)."""
    return all(bool((x[s : s + _ROWS] >= 0).all()) for s in range(0, x.shape[0], _ROWS))


def _has_class_form(a):
    """Whether each row of ``a`` has at most one negative entry (C >= 2)."""
    if a.shape[1] < 2:
        return False
    return not any(
        bool((a[s : s + _ROWS] < 0).sum(1).gt(1).any())
        for s in range(0, a.shape[0], _ROWS)
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
            [
                _sq(a[s : s + _ROWS].scatter(1, k[s : s + _ROWS, None], 0.0))
                for s in range(0, n, _ROWS)
            ]
        )
        self.rest_up = rest.mul_(1.0 + eps).add_(floor)[order]
        self.a_columns = None
        if self.signed:
            self.top = _by_rows(lambda block: block.clamp(min=0.0).amax(1), a)[order]
            # the weaker block bounds leave most rows to be tested one by one:
            # the columns of a in this order, each contiguous
            self.a_columns = a.new_empty((n_classes, n))
            for s in range(0, n, _ROWS):
                self.a_columns[:, s : s + _ROWS] = a[order[s : s + _ROWS]].T
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


def _proba_minus_onehot(proba):
    a = proba.clone()
    rows = torch.arange(a.shape[0], device=a.device)
    a[rows, argmax_labels(a)] -= 1.0
    return a


def _embedding(context, X, dtype=None):
    """Penultimate embedding on the net's device, or the flattened input.

    With ``dtype``, a network's embedding is stored in it batch by batch.
    Computed through ``context.map_rows`` (on Dask workers when active).
    """
    parts = context.map_rows(partial(_embedding_part, dtype=dtype), X)
    parts = [p for p in parts if p.shape[0]]
    if len(parts) <= 1:
        return parts[0].to(_device(context)) if parts else _embedding_part(context, X)
    device = _device(context)
    return torch.cat([p.to(device) for p in parts])


def _device(context):
    if isinstance(context.estimator, NeuralNet):
        return torch.device(context.estimator.device)
    return torch.device("cpu")


def _embedding_part(context, X, dtype=None):
    if isinstance(context.estimator, NeuralNet):
        out = _Rows(n_samples(X))
        for _, feats in context.estimator.iter_features(X, embedding=True):
            emb = feats["embedding"]
            out.add(emb if dtype is None else emb.to(dtype))
        return out.result(context.estimator.device)
    arr = np.asarray(X)
    return torch.tensor(arr.reshape(arr.shape[0], -1), dtype=torch.float64)


class _Rows:
    """Batches written into one (n, ...) tensor: no list, no concatenation."""

    def __init__(self, n):
        self.n = n
        self.out = None
        self.filled = 0

    def add(self, batch):
        if self.out is None:
            shape = (self.n, *batch.shape[1:])
            self.out = batch.new_empty(shape)
        self.out[self.filled : self.filled + batch.shape[0]] = batch
        self.filled += batch.shape[0]

    def result(self, device):
        if self.out is None:
            return torch.empty(0, 0, device=device)
        return self.out[: self.filled]
