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

This module holds the strategies and the embeddings they work on; the
engines are in their own modules: k-center greedy in ``_kcenter``
(:func:`k_center_greedy`), k-means++ seeding in ``_kmeanspp``
(:func:`kmeans_pp_gradient`), and the row-block and precision helpers both
share in ``_blocks``.
"""

from __future__ import annotations

from functools import partial
from numbers import Integral

import numpy as np
import torch
from skorch import NeuralNet

from .._data import n_samples
from .._utils import argmax_labels
from ..validation import Interval, Options
from ._blocks import _PROBE_COLUMNS, _half_products_accumulate_in_float32
from ._kcenter import k_center_greedy
from ._kmeanspp import kmeans_pp_gradient
from .base import QueryStrategy

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
        "embedding_dtype": [Options(set(_EMBEDDING_DTYPES))],
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
        "embedding_dtype": [Options(set(_EMBEDDING_DTYPES))],
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
