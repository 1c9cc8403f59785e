"""TypiClust: typical samples of uncovered clusters, for small budgets."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.neighbors import NearestNeighbors

from .._data import n_samples
from .._utils import draw_seed
from ..validation import HasMethods, Interval
from .base import QueryStrategy
from .diversity import _embedding

# KMeans up to this many clusters, MiniBatchKMeans above (as the authors do)
_FULL_KMEANS_CLUSTERS = 50


class TypiClust(QueryStrategy):
    """Typical samples of the largest uncovered clusters (TypiClust).

    Hacohen, Dekel & Weinshall's low-budget strategy: the labelled rows and
    the candidates are clustered together by k-means into ``n_labeled + n``
    clusters (at most ``max_clusters``), in an embedding. The clusters are
    visited by fewest labelled rows first, then largest first (clusters
    smaller than ``min_cluster_size`` last), and each visit picks the
    cluster's most *typical* candidate: the one with the smallest mean
    Euclidean distance to its ``n_neighbors`` nearest candidates of the
    same cluster (typicality is the inverse of that distance); with more
    picks than clusters the visits go round again. The picks thus cover
    dense regions that no label covers yet, the opposite of uncertainty
    sampling's choice of outliers, which is what helps when labels are few.
    It needs no labels (see :func:`skal.coldstart.select_label_free` for a
    first batch) and works at any round.

    The embedding is the network's penultimate embedding (the input of its
    last ``nn.Linear``; for any other classifier, its input, flattened), or
    that of ``feature_extractor``. The paper clusters self-supervised
    (SimCLR) features: the embedding of a network trained on a few labels
    may separate the data less well, so a pretrained or self-supervised
    extractor can be given.

    Parameters
    ----------
    feature_extractor : callable, object with ``transform``, or None, \
default=None
        Maps rows (as the classifier sees them: after a pipeline's earlier
        steps) to a 2-d array of features, e.g. a fitted
        :class:`~sklearn.decomposition.PCA`, or a function running a
        pretrained network. None uses the classifier's embedding.
    n_neighbors : int, default=20
        Neighbours over which typicality is computed (the paper's 20),
        at most half of the cluster's candidates.
    min_cluster_size : int, default=5
        Clusters with fewer rows are visited only after all others (the
        paper's 5).
    max_clusters : int, default=500
        The most clusters k-means forms (the authors' 500).

    References
    ----------
    .. [1] G. Hacohen, A. Dekel and D. Weinshall, "Active Learning on a
       Budget: Opposite Strategies Suit High and Low Budgets", ICML 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> X = np.random.RandomState(0).randn(300, 4)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> learner = skal.ActiveLearner(
    ...     LogisticRegression(), strategy="typiclust", random_state=0
    ... ).fit(X[:10], y[:10])
    >>> learner.query(X[10:], n=5).shape
    (5,)
    """

    per_sample = False
    _parameter_constraints = {
        "feature_extractor": [callable, HasMethods(["transform"]), None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "min_cluster_size": [Interval(Integral, 1, None, closed="left")],
        "max_clusters": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        feature_extractor=None,
        n_neighbors=20,
        min_cluster_size=5,
        max_clusters=500,
    ):
        self.feature_extractor = feature_extractor
        self.n_neighbors = n_neighbors
        self.min_cluster_size = min_cluster_size
        self.max_clusters = max_clusters

    def select(self, context, X, n):
        self.validate(context.estimator)
        candidates = self._features(context, X)
        labeled = (
            self._features(context, context.X_labeled)
            if n_samples(context.X_labeled)
            else np.empty((0, candidates.shape[1]), dtype=candidates.dtype)
        )
        return typiclust_select(
            candidates,
            labeled,
            n,
            random_state=context.random_state,
            n_neighbors=int(self.n_neighbors),
            min_cluster_size=int(self.min_cluster_size),
            max_clusters=int(self.max_clusters),
        )

    def _features(self, context, X):
        if self.feature_extractor is None:
            return _as_features(_embedding(context, X), "the embedding")
        return extract_features(self.feature_extractor, X, n_samples(X))


def extract_features(extractor, X, n_rows):
    """``extractor``'s features of ``X`` as a 2-d float array, checked.

    Parameters
    ----------
    extractor : callable or object with ``transform``
    X : array-like, tensor or Dataset
    n_rows : int
        How many rows the features must have.

    Returns
    -------
    features : ndarray of shape (n_rows, n_features)
    """
    transform = getattr(extractor, "transform", None)
    out = transform(X) if callable(transform) else extractor(X)
    return _as_features(out, "feature_extractor's output", n_rows)


def _as_features(out, what, n_rows=None):
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    out = np.asarray(out)
    if out.ndim < 2 or (n_rows is not None and out.shape[0] != n_rows):
        expected = "(n_rows, n_features)" if n_rows is None else f"({n_rows}, ...)"
        raise ValueError(
            f"{what} must be an array of shape {expected}, got shape {out.shape}"
        )
    out = out.reshape(out.shape[0], -1).astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return out


def typiclust_select(
    candidates,
    labeled,
    n,
    *,
    random_state,
    n_neighbors=20,
    min_cluster_size=5,
    max_clusters=500,
):
    """TypiClust's picks among ``candidates``, given the labelled rows.

    Parameters
    ----------
    candidates : ndarray of shape (n_candidates, n_features)
    labeled : ndarray of shape (n_labeled, n_features)
        May be empty (a label-free first batch).
    n : int
        How many to select, ``1 <= n <= n_candidates``.
    random_state : numpy.random.RandomState
        Seeds k-means.
    n_neighbors, min_cluster_size, max_clusters : int
        As in :class:`TypiClust`.

    Returns
    -------
    indices : ndarray of shape (n,)
        Distinct candidate indices, in the order they were picked.

    Examples
    --------
    Two dense groups and an outlier; two picks, one typical row of each
    group:

    >>> import numpy as np
    >>> from skal.strategies.typiclust import typiclust_select
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.randn(30, 2) * 0.1, rng.randn(30, 2) * 0.1 + 5, [[20, 20]]]
    >>> picks = typiclust_select(
    ...     X, np.empty((0, 2)), 2, random_state=rng, n_neighbors=5
    ... )
    >>> sorted(int(p) // 30 for p in picks)
    [0, 1]
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    labeled = np.asarray(labeled, dtype=np.float64).reshape(-1, candidates.shape[1])
    n_cand, n_lab = len(candidates), len(labeled)
    if not 1 <= n <= n_cand:
        raise ValueError(f"n must be between 1 and {n_cand}, got n={n}")
    points = np.concatenate([labeled, candidates])
    n_clusters = min(n_lab + n, max_clusters, len(points))
    seed = draw_seed(random_state)
    if n_clusters <= _FULL_KMEANS_CLUSTERS:
        kmeans = KMeans(n_clusters, n_init=1, random_state=seed)
    else:
        kmeans = MiniBatchKMeans(n_clusters, n_init=1, random_state=seed)
    assign = kmeans.fit_predict(points)
    sizes = np.bincount(assign, minlength=n_clusters)
    covered = np.bincount(assign[:n_lab], minlength=n_clusters)
    # fewest labels, then largest; small clusters after every other
    order = np.lexsort((-sizes, covered, sizes < min_cluster_size))
    members = [np.flatnonzero(assign[n_lab:] == k) for k in order]
    free = [np.ones(len(m), dtype=bool) for m in members]
    picked = []
    while len(picked) < n:
        for k, rows in enumerate(members):
            if len(picked) == n:
                break
            left = rows[free[k]]
            if len(left) == 0:
                continue
            best = int(
                np.argmin(_mean_neighbor_distance(candidates[left], n_neighbors))
            )
            picked.append(left[best])
            free[k][np.flatnonzero(free[k])[best]] = False
    return np.asarray(picked, dtype=np.intp)


def _mean_neighbor_distance(points, n_neighbors):
    """Each point's mean distance to its nearest other points (at most
    ``n_neighbors``, at most half the points): the inverse of typicality."""
    k = min(n_neighbors, len(points) // 2)
    if k < 1:
        return np.zeros(len(points))
    nn = NearestNeighbors(n_neighbors=k + 1).fit(points)
    dist, _ = nn.kneighbors(points)
    return dist[:, 1:].mean(axis=1)
