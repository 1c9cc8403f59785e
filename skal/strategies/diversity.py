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
matrix: core-set keeps one vector of N distances and computes distances in
blocks of ``chunk_size`` rows; BADGE factors the squared distance between two
gradient embeddings ``a (x) h`` and ``a' (x) h'`` as
``|a|^2 |h|^2 + |a'|^2 |h'|^2 - 2 (a.a') (h.h')``.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from skorch import NeuralNet

from .._utils import argmax_labels
from .base import QueryStrategy


class CoreSet(QueryStrategy):
    """Core-set selection by k-center greedy (Sener & Savarese, 2018).

    The labelled samples are the initial centres. Each step adds the
    candidate farthest (Euclidean distance in the penultimate embedding) from
    its nearest centre, and makes it a centre. The returned indices are in
    the order of selection.

    Distances between candidates and labelled samples are computed in
    ``chunk_size`` x ``chunk_size`` blocks and each greedy step updates a
    vector of N nearest-centre distances with one matrix-vector product, so
    memory is O(N * D + chunk_size^2), never N x N. Embeddings are centred on
    the candidates' mean before distances are taken (a translation, which
    leaves distances unchanged and reduces float32 cancellation).

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
        "chunk_size": [Interval(Integral, 1, None, closed="left")]
    }

    def __init__(self, chunk_size=2048):
        self.chunk_size = chunk_size

    def select(self, context, X, n):
        self.validate(context.estimator)
        candidates = _embedding(context, X)
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
    seeding step costs O(N (C + D)).

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

    Parameters
    ----------
    candidates : torch.Tensor of shape (n_candidates, n_features)
    centers : torch.Tensor of shape (n_centers, n_features)
        Initial centres (the labelled set), on the same device; may be empty.
    n : int
        How many candidates to select, ``1 <= n <= n_candidates``.
    random_state : numpy.random.RandomState
        Used only to draw the first centre when ``centers`` is empty.
    chunk_size : int, default=2048
        Rows per block of the candidate-to-centre distances.

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
    mean = candidates.mean(0, keepdim=True)
    candidates = candidates - mean
    centers = centers - mean
    sq_norms = (candidates * candidates).sum(1)
    if centers.shape[0] == 0:
        min_dist = torch.full_like(sq_norms, float("inf"))
        first = int(random_state.randint(n_cand))
    else:
        min_dist = _min_sq_dist(candidates, sq_norms, centers, chunk_size)
        first = None
    picked = np.empty(n, dtype=np.intp)
    for step in range(n):
        idx = first if step == 0 and first is not None else int(min_dist.argmax())
        picked[step] = idx
        dist = torch.addmv(sq_norms, candidates, candidates[idx], alpha=-2.0)
        dist.add_(sq_norms[idx]).clamp_(min=0.0)
        torch.minimum(min_dist, dist, out=min_dist)
        min_dist[idx] = -1.0
    return picked


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
    if isinstance(context.estimator, NeuralNet):
        a_parts, h_parts = [], []
        for logits, feats in context.estimator.iter_features(X, embedding=True):
            a_parts.append(_proba_minus_onehot(torch.softmax(logits.float(), dim=1)))
            h_parts.append(feats["embedding"])
        return torch.cat(a_parts), torch.cat(h_parts)
    proba = torch.as_tensor(context.predict_proba(X))
    return _proba_minus_onehot(proba), _embedding(context, X).to(proba.dtype)


def kmeans_pp_gradient(a, h, n, *, random_state):
    """k-means++ seeding on the gradient embeddings ``a (x) h``.

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
    g2 = (a * a).sum(1) * (h * h).sum(1)
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
        if idx is None:
            rest = np.setdiff1d(np.arange(n_samples), picked[:step])
            idx = int(rest[random_state.randint(len(rest))])
        picked[step] = idx
        dist = torch.addcmul(g2, a @ a[idx], h @ h[idx], value=-2.0)
        dist.add_(g2[idx]).clamp_(min=0.0)
        torch.minimum(min_dist, dist, out=min_dist)
        min_dist[idx] = 0.0
    return picked


def _proba_minus_onehot(proba):
    a = proba.clone()
    rows = torch.arange(a.shape[0], device=a.device)
    a[rows, argmax_labels(a)] -= 1.0
    return a


def _embedding(context, X):
    """Penultimate embedding on the net's device, or the flattened input."""
    if isinstance(context.estimator, NeuralNet):
        parts = [
            f["embedding"]
            for _, f in context.estimator.iter_features(X, embedding=True)
        ]
        if parts:
            return torch.cat(parts)
        return torch.empty(0, 0, device=context.estimator.device)
    arr = np.asarray(X)
    return torch.tensor(arr.reshape(arr.shape[0], -1), dtype=torch.float64)


def _min_sq_dist(candidates, sq_norms, centers, chunk_size):
    """Squared distance of each candidate to its nearest centre, blockwise."""
    out = torch.empty_like(sq_norms)
    center_sq = (centers * centers).sum(1)
    for start in range(0, candidates.shape[0], chunk_size):
        block = candidates[start : start + chunk_size]
        best = None
        for c_start in range(0, centers.shape[0], chunk_size):
            c_block = centers[c_start : c_start + chunk_size]
            dist = (
                sq_norms[start : start + chunk_size, None]
                + center_sq[None, c_start : c_start + chunk_size]
                - 2.0 * (block @ c_block.T)
            ).amin(1)
            best = dist if best is None else torch.minimum(best, dist)
        out[start : start + chunk_size] = best.clamp_(min=0.0)
    return out
