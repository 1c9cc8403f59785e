"""Label-free first batches: what to label when nothing is labelled yet.

:func:`select_label_free` picks the first rows to label from the pool alone,
in an embedding: the penultimate embedding of the learner's network (built
without training if the learner is not fitted yet: an untrained network's
embedding is a random projection of the input through its layers), of a
user-given feature extractor, or the raw features for other classifiers.
The same methods draw the initial labelled set of the simulations
(``initial=`` in :func:`skal.model_selection.active_learning_curve`).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from skorch import NeuralNet

from ._data import is_torch_dataset, n_samples
from ._utils import draw_seed, final_step, torch_seed
from .strategies._kcenter import k_center_greedy
from .strategies._kmeanspp import kmeans_pp_gradient
from .strategies.typiclust import _as_features, extract_features, typiclust_select

LABEL_FREE_METHODS = ("random", "kmeans++", "kcenter", "typiclust")

__all__ = ["label_free_embedding", "select_label_free"]


def select_label_free(
    learner,
    X_pool,
    n: int,
    *,
    method: str = "kmeans++",
    random_state=None,
    embedding=None,
) -> np.ndarray:
    """Rows of a pool to label first, chosen without any label.

    Parameters
    ----------
    learner : ActiveLearner or estimator
        Whose embedding to use (see :func:`label_free_embedding`); it may be
        unfitted and is never modified.
    X_pool : array-like of shape (n_pool, ...), tensor or torch Dataset
        The unlabelled pool.
    n : int
        How many rows to pick, ``1 <= n <= n_pool``.
    method : {"random", "kmeans++", "kcenter", "typiclust"}, default="kmeans++"
        - ``"random"``: a uniform draw (no embedding is computed);
        - ``"kmeans++"``: k-means++ seeding (Arthur & Vassilvitskii, 2007):
          the row farthest from the embedding's mean, then each next one
          drawn with probability proportional to its squared distance to
          the nearest row picked so far;
        - ``"kcenter"``: k-center greedy (Sener & Savarese, 2018): a first
          row drawn uniformly, then each time the row farthest from those
          picked;
        - ``"typiclust"``: the most typical row of each of ``n`` k-means
          clusters, largest first (Hacohen, Dekel & Weinshall, 2022; see
          :class:`skal.strategies.TypiClust`).
    random_state : int, RandomState instance or None, default=None
        Seeds the draws, k-means and the untrained network's weights: the
        same seed gives the same rows. A session passes its learner's
        ``random_state``.
    embedding : array-like, callable, object with ``transform``, or None, \
default=None
        The features to select in: an array of shape (n_pool, n_features)
        computed beforehand, or a feature extractor applied to ``X_pool``
        (e.g. a pretrained or self-supervised network wrapped in a
        function, or a fitted PCA). None uses :func:`label_free_embedding`.

    Returns
    -------
    indices : ndarray of shape (n,) and dtype int
        Distinct rows of ``X_pool``, in the order they were picked.

    References
    ----------
    .. [1] D. Arthur and S. Vassilvitskii, "k-means++: The Advantages of
       Careful Seeding", SODA 2007.
    .. [2] O. Sener and S. Savarese, "Active Learning for Convolutional Neural
       Networks: A Core-Set Approach", ICLR 2018.
    .. [3] G. Hacohen, A. Dekel and D. Weinshall, "Active Learning on a
       Budget: Opposite Strategies Suit High and Low Budgets", ICML 2022.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> from skal.coldstart import select_label_free
    >>> X = np.random.RandomState(0).randn(500, 8).astype(np.float32)
    >>> net = skal.NeuralNetClassifier(skal.nets.MLP, max_epochs=5)
    >>> learner = skal.ActiveLearner(net, classes=[0, 1], random_state=0)
    >>> first = select_label_free(learner, X, 10, method="kcenter", random_state=0)
    >>> first.shape, len(set(first.tolist()))
    ((10,), 10)
    >>> again = select_label_free(learner, X, 10, method="kcenter", random_state=0)
    >>> bool((first == again).all())
    True
    """
    n_pool = _check_pool(X_pool)
    n = _check_n(n, n_pool)
    if method not in LABEL_FREE_METHODS:
        raise ValueError(f"method must be one of {LABEL_FREE_METHODS}, got {method!r}")
    rng = check_random_state(random_state)
    if method == "random":
        return rng.permutation(n_pool)[:n].astype(np.intp)
    emb = label_free_embedding(learner, X_pool, random_state=rng, embedding=embedding)
    if method == "typiclust":
        return typiclust_select(emb, np.empty((0, emb.shape[1])), n, random_state=rng)
    points = torch.from_numpy(emb)
    if method == "kcenter":
        return k_center_greedy(
            points, points.new_empty((0, points.shape[1])), n, random_state=rng
        )
    # k-means++ seeding on the centred embedding: the seeding engine's
    # factored rows a (x) h with a = 1 are the rows h themselves
    centred = points - points.mean(dim=0)
    ones = centred.new_ones((n_pool, 1))
    return kmeans_pp_gradient(ones, centred, n, random_state=rng)


def label_free_embedding(learner, X_pool, *, random_state=None, embedding=None):
    """The features :func:`select_label_free` selects in.

    Parameters
    ----------
    learner : ActiveLearner or estimator
        - a fitted :class:`~skal.ActiveLearner`: its network's penultimate
          embedding (the inputs after its pipeline's earlier steps), or for
          another classifier the inputs as it sees them, flattened;
        - an unfitted learner, or an estimator: the same with the estimator
          as given. A skorch network that is not initialized is cloned and
          initialized without training (with the learner's ``classes``
          declared, or two outputs: the width of the output does not change
          the embedding), its weights drawn from ``random_state``; a
          pipeline's earlier steps are fitted on ``X_pool`` (unsupervised).
    X_pool : array-like of shape (n_pool, ...), tensor or torch Dataset
    random_state : int, RandomState instance or None, default=None
        Seeds the untrained network's weights.
    embedding : array-like, callable, object with ``transform``, or None, \
default=None
        As in :func:`select_label_free`: given features, or an extractor
        applied to ``X_pool``.

    Returns
    -------
    embedding : ndarray of shape (n_pool, n_features) and dtype float64

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> from skal.coldstart import label_free_embedding
    >>> X = np.random.RandomState(0).randn(50, 8).astype(np.float32)
    >>> net = skal.NeuralNetClassifier(skal.nets.MLP, module__hidden_units=(16,))
    >>> label_free_embedding(skal.ActiveLearner(net), X, random_state=0).shape
    (50, 16)
    """
    n_pool = _check_pool(X_pool)
    if embedding is not None:
        if callable(embedding) or callable(getattr(embedding, "transform", None)):
            return extract_features(embedding, X_pool, n_pool)
        return _as_features(embedding, "embedding", n_pool)
    rng = check_random_state(random_state)
    fitted = getattr(learner, "estimator_", None)
    if fitted is not None:
        X = learner._transform(X_pool)
        estimator = final_step(fitted)
    else:
        estimator = getattr(learner, "estimator", learner)
        X = X_pool
        if isinstance(estimator, Pipeline) and len(estimator) > 1:
            X = clone(estimator[:-1]).fit_transform(X_pool)
        estimator = final_step(estimator)
    if isinstance(estimator, NeuralNet):
        # lazy layers draw their weights at the first forward pass: seeded too
        with torch_seed(draw_seed(rng)):
            net = _initialized(estimator, getattr(learner, "classes", None))
            emb = net.embed(X)
        return _as_features(emb, "the network's embedding", n_pool)
    if is_torch_dataset(X):
        raise TypeError(
            f"X_pool is a torch Dataset and the classifier is "
            f"{type(estimator).__name__}, not a network: pass embedding= (the "
            "features to select in, or a function computing them)"
        )
    return _as_features(np.asarray(X, dtype=np.float64), "X_pool", n_pool)


def _initialized(net, classes):
    """The network itself if initialized, else an initialized clone."""
    if getattr(net, "initialized_", False):
        return net
    net = clone(net)
    if "classes" in net.get_params(deep=False) and net.classes is None:
        n_classes = 2 if classes is None else len(np.unique(np.asarray(classes)))
        net.set_params(classes=list(range(max(n_classes, 2))))
    return net.initialize()


def _check_pool(X_pool):
    try:
        n_pool = n_samples(X_pool)
    except TypeError:
        raise TypeError(
            "X_pool must be an array-like, tensor or torch Dataset, got "
            f"{type(X_pool).__name__}"
        ) from None
    if n_pool == 0:
        raise ValueError("X_pool is empty; there is nothing to select")
    return n_pool


def _check_n(n, n_pool):
    if not isinstance(n, numbers.Integral) or isinstance(n, bool):
        raise TypeError(f"n must be an integer, got {n!r} of type {type(n).__name__}")
    if not 1 <= n <= n_pool:
        raise ValueError(f"n must be between 1 and the pool size ({n_pool}), got n={n}")
    return int(n)
