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
    seeding step costs at most O(N (C + D)). A step computes ``h.h'`` only
    for the samples whose distance to the new point may be below their
    current one: with ``|h.h'| <= |h||h'|`` (and ``h.h' >= 0`` when every
    embedding is non-negative, as after a ReLU), ``a.a'`` alone bounds the
    distance from below, with a margin for rounding. The picks are those of
    computing every distance.

    For a classifier that is not a skorch network, ``h`` is the input as the
    classifier sees it and ``p`` its ``predict_proba``.

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

    def select(self, context, X, n):
        a, h = gradient_embedding_factors(context, X)
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
    """``_sq`` in blocks of rows: no temporary the size of ``x``."""
    blocks = [x[s : s + _ROWS] for s in range(0, x.shape[0], _ROWS)] or [x]
    return torch.cat([_sq(b) for b in blocks])


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


def gradient_embedding_factors(context, X):
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

    Returns
    -------
    a : torch.Tensor of shape (n_samples, n_classes)
    h : torch.Tensor of shape (n_samples, n_features_embedding)
        Both on the net's device (CPU for other classifiers).
    """
    parts = [p for p in context.map_rows(_factors, X) if p[0].shape[0]]
    device = _device(context)
    if not parts:
        return _factors(context, X)
    if len(parts) == 1:
        return parts[0][0].to(device), parts[0][1].to(device)
    return (
        torch.cat([a.to(device) for a, _ in parts]),
        torch.cat([h.to(device) for _, h in parts]),
    )


def _factors(context, X):
    if isinstance(context.estimator, NeuralNet):
        batches = context.estimator.iter_features(X, embedding=True)
        a, h = _Rows(n_samples(X)), _Rows(n_samples(X))
        for logits, feats in batches:
            a.add(_proba_minus_onehot(torch.softmax(logits.float(), dim=1)))
            h.add(feats["embedding"])
        device = context.estimator.device
        return a.result(device), h.result(device)
    proba = torch.as_tensor(context.predict_proba(X))
    return _proba_minus_onehot(proba), _embedding_part(context, X).to(proba.dtype)


def kmeans_pp_gradient(a, h, n, *, random_state):
    """k-means++ seeding on the gradient embeddings ``a (x) h``.

    The picks are those of computing every squared distance
    ``|a|^2 |h|^2 + |a'|^2 |h'|^2 - 2 (a.a') (h.h')`` at every step; the
    work is not. On the CPU a step computes ``a.a'`` and ``h.h'`` only for
    the samples whose distance to the new point may be below their current
    one. They are found by lower bounds of the distance that cost O(N),
    with a margin for rounding:

    - ``|h.h'| <= |h||h'|``, and ``h.h' >= 0`` when every embedding is
      non-negative (as after a ReLU);
    - when every row of ``a`` has at most one negative entry, at ``k``
      (BADGE's rows are probabilities minus the one-hot vector of the
      predicted class ``k``), ``a.a'`` is known up to the sum over the
      classes other than ``k`` and the new point's ``k'``, which lies
      between 0 and the product of the rows' norms over those classes (one
      column of ``a`` is read, no row);
    - for the samples left, the exact ``a.a'``.

    On other devices (a GPU) every distance is computed at every step, in
    two matrix-vector products, and the loop does not wait for the device.

    Parameters
    ----------
    a : torch.Tensor of shape (n_samples, n_classes)
    h : torch.Tensor of shape (n_samples, n_features), same device as ``a``
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
    seeding = _GradientSeeding(a, h, bounds=a.device.type == "cpu")
    if a.device.type != "cpu":
        state = random_state.get_state()
        picked = seeding.run_dense(n, random_state)
        if picked is not None:
            return picked
        # a step found every distance zero: the step-by-step loop draws
        # differently there
        random_state.set_state(state)
    return seeding.run(n, random_state)


class _GradientSeeding:
    """k-means++ seeding on factored gradient embeddings (kmeans_pp_gradient)."""

    def __init__(self, a, h, *, bounds=True):
        self.a, self.h = a, h
        self.n = a.shape[0]
        a2, h2 = _row_sq(a), _row_sq(h)
        self.g2 = a2 * h2
        self.ah = self.g2.sqrt()
        self.h_norm = h2.sqrt()
        # twice a bound on the rounding error of a computed distance,
        # relative to g2 + g2' + 2 |a||a'||h||h'|
        self.rel_err = (
            4.0 * (a.shape[1] + h.shape[1] + 8) * _unit_roundoff(a.dtype, a.device)
        )
        # embeddings after a ReLU have h.h' >= 0: then a.a' < 0 can only add
        self.non_negative = bool((h >= 0).all()) if bounds else False
        self.classes = _ClassBounds.of(a) if bounds else None
        if self.classes is not None:
            # |a|, raised by what underflow may have lost from a2
            self.a_norm = a2.add(a.shape[1] * torch.finfo(a.dtype).tiny).sqrt_()

    def run(self, n, random_state):
        """Step by step, computing only the distances that may shrink."""
        g2 = self.g2
        min_dist = torch.full_like(g2, float("inf"))
        picked = np.empty(n, dtype=np.intp)
        for step in range(n):
            idx = None
            if step == 0:
                if bool(g2.max() > 0):
                    idx = int(g2.argmax())
            else:
                cumsum = min_dist.cumsum(0, dtype=torch.float64)
                total = float(cumsum[-1])
                if total > 0:
                    target = torch.tensor(
                        random_state.random_sample() * total,
                        dtype=torch.float64,
                        device=cumsum.device,
                    )
                    idx = int(torch.searchsorted(cumsum, target, right=True))
                    idx = min(idx, self.n - 1)
            if idx is None:
                rest = np.setdiff1d(np.arange(self.n), picked[:step])
                idx = int(rest[random_state.randint(len(rest))])
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
            hh = (h @ h.index_select(0, idx).T).squeeze(1)
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
        aa = rows = None
        if self.classes is not None:
            low, high = self.classes.inner_product_bounds(a, idx)
            # the bounds' own rounding: their terms are at most |a||a'|
            # (and the smallest normal number where products underflow)
            slack = self.a_norm * (self.rel_err * float(self.a_norm[idx]))
            slack.add_(torch.finfo(a.dtype).tiny)
            if self.non_negative:
                coupling = high.add_(slack).clamp_(min=0.0)
            else:
                coupling = torch.maximum(
                    low.sub_(slack).abs_(), high.add_(slack).abs_()
                )
            rows = self._candidates(coupling, idx, margin, min_dist)
        if rows is None or rows.numel() > self.n // 4:
            aa = a @ a[idx]
            rows = self._candidates(self._coupling(aa), idx, margin, min_dist)
            if rows.numel() > self.n // 4:
                dist = torch.addcmul(g2, aa, h @ h[idx], value=-2.0)
                dist.add_(g2[idx]).clamp_(min=0.0)
                torch.minimum(min_dist, dist, out=min_dist)
                return
            aa = aa[rows]
        elif rows.numel():
            aa = a.index_select(0, rows) @ a[idx]
            keep = self._candidates(self._coupling(aa), idx, margin, min_dist, rows)
            rows, aa = rows[keep], aa[keep]
        if rows.numel():
            hh = h.index_select(0, rows) @ h[idx]
            dist = torch.addcmul(g2[rows], aa, hh, value=-2.0)
            dist.add_(g2[idx]).clamp_(min=0.0)
            min_dist[rows] = torch.minimum(min_dist[rows], dist)

    def _coupling(self, aa):
        return aa.clamp(min=0.0) if self.non_negative else aa.abs()

    def _candidates(self, coupling, idx, margin, min_dist, rows=None):
        """Where ``coupling``, a bound of ``a.a'`` as it enters the distance,
        leaves a lower bound below ``min_dist``.

        ``coupling`` covers every sample, or ``rows`` only; the positions
        returned index the same.
        """
        g2, h_norm = self.g2, self.h_norm
        if rows is not None:
            g2, h_norm = g2[rows], h_norm[rows]
            margin, min_dist = margin[rows], min_dist[rows]
        # the bound's own rounding is covered by scaling the coupling term
        # by 1 + rel_err (rel_err is many units of roundoff)
        scale = -2.0 * (1.0 + self.rel_err) * float(self.h_norm[idx])
        gap = torch.addcmul(g2 + self.g2[idx], coupling, h_norm, value=scale)
        return torch.nonzero(gap.sub_(margin) < min_dist).flatten()


class _ClassBounds:
    """Bounds of ``a.a'`` for rows with at most one negative entry.

    BADGE's rows ``p - onehot(k)`` have one, at the predicted class ``k``.
    With ``k'`` that of the other row ``a'``, ``a.a'`` is ``a[k] a'[k] +
    a[k'] a'[k']`` (one term if ``k = k'``) plus the sum over the other
    classes, where both rows are non-negative: that rest lies between 0 and
    the product of the two rows' norms over those classes.
    """

    def __init__(self, k, own, rest_up, columns):
        self.k = k  # the class of each row (the position of its negative entry)
        self.own = own  # a[k] of each row
        self.rest_up = rest_up  # an upper bound of the sum of a[j]^2, j != k
        self.columns = columns  # the columns of a, each contiguous

    @classmethod
    def of(cls, a):
        """The bounds for ``a``, or None if its rows do not have the form."""
        if a.shape[1] < 2:
            return None
        # at most one negative entry per row, at k
        if bool((a < 0).sum(1).gt(1).any()):
            return None
        k = a.argmin(1)
        own = a.gather(1, k[:, None]).squeeze(1)
        # summed without a[k]^2, so that the rounding is relative to the
        # rest; then raised by a bound of the rounding and of the squares
        # lost to underflow, as every square of the rest's below
        rest = torch.cat(
            [
                _sq(a[s : s + _ROWS].scatter(1, k[s : s + _ROWS, None], 0.0))
                for s in range(0, a.shape[0], _ROWS)
            ]
        )
        n_classes = a.shape[1]
        eps = 4.0 * (n_classes + 2) * _unit_roundoff(a.dtype, a.device)
        floor = 2.0 * n_classes * torch.finfo(a.dtype).tiny
        rest_up = rest.mul_(1.0 + eps).add_(floor)
        return cls(k, own, rest_up, a.T.contiguous())

    def inner_product_bounds(self, a, idx):
        """Lower and upper bounds of ``a @ a[idx]`` (fresh tensors)."""
        k = self.k
        kc = int(k[idx])
        center = a[idx]
        same = k == kc
        col = self.columns[kc].masked_fill(same, 0.0)  # a[k'] where k != k'
        cen = center[k].masked_fill_(same, 0.0)  # a'[k] where k != k'
        # a[k] a'[k] + a[k'] a'[k'], or a[k] a'[k] where k = k'
        base = torch.mul(self.own, center[k]).addcmul_(col, center[kc])
        # the norms of the rest: the row's without k', the centre's without k
        row = torch.sub(self.rest_up, col * col).clamp_(min=0.0).sqrt_()
        rest_c = float(self.rest_up[idx])
        width = torch.sub(rest_c, cen * cen).clamp_(min=0.0).sqrt_().mul_(row)
        return base, width.add_(base)


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
