"""Batch-aware selection: greedy dynamicAL with pairwise terms, stochastic batches."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch

from .._utils import draw_seed, eval_mode
from ..gradients import sum_gradient
from ..pairwise import GradientFeatures, PairwiseGradients
from ..validation import HasMethods, Interval, Options
from ._registry import get_strategy
from .base import QueryStrategy
from .context import check_net
from .dynamic_al import DynamicAL

_MODES = ("power", "softmax", "softrank")


class BatchDynamicAL(QueryStrategy):
    """dynamicAL with the pairwise terms: greedy maximisation of Δ(Q|S).

    dynamicAL (Wang et al., 2022) queries the ``b`` candidates with the
    largest per-sample scores ``Δ({u}|S) = ‖g_u‖² + γ g_uᵀ G_S``
    (:class:`DynamicAL`). The quantity it relaxes is the change of the
    training dynamics when a whole batch ``Q`` is added (paper, eq. 13),
    which for the cross-entropy is, with ``G_Q = Σ_{u∈Q} g_u``::

        Δ(Q|S) = ‖G_Q‖² + γ G_Qᵀ G_S
               = Σ_{u∈Q} Δ({u}|S) + Σ_{u≠u'∈Q} g_uᵀ g_u'.

    Top-``b`` selection drops the last sum. This strategy keeps it and
    builds ``Q`` greedily: starting from ``Q = ∅``, it adds the candidate
    with the largest marginal gain

        Δ(Q ∪ {u}|S) − Δ(Q|S) = Δ({u}|S) + 2 Σ_{q∈Q} g_uᵀ g_q

    until ``|Q| = b``. With ``γ = 2`` this is the objective whose
    per-sample relaxation :func:`skal.ntk.approximation_ratio` measures
    (``R(Q|S) = Σ_u Δ({u}|S) / Δ(Q|S)``). Gradients are taken at the
    pseudo-labels, over all trainable parameters, in eval mode, exactly as
    in :class:`DynamicAL`; the first pick is DynamicAL's top candidate.

    The pairwise terms *reward* candidates whose gradients point the same
    way as those already chosen: Δ(Q|S) is the training-dynamics objective,
    not a diversity criterion, and its greedy maximiser tends to fill a
    batch with one pseudo-label class. ``pairwise_weight=λ`` generalises the
    objective to ``Σ_{u∈Q} Δ({u}|S) + λ Σ_{u≠u'∈Q} g_uᵀ g_u'``: ``λ = 1`` is
    Δ(Q|S), ``λ = 0`` DynamicAL's top-``b``, and ``λ < 0`` penalises
    aligned gradients (a diversity variant that is not in the paper).

    ``g_uᵀ g_q`` comes from compact per-layer features
    (:class:`skal.pairwise.PairwiseGradients`): exact by default, or
    estimated through a random sketch of ``sketch_size`` numbers per large
    layer, with ``P(|error| ≥ √(8 / (k δ)) ‖g_u‖‖g_q‖) ≤ δ`` per pair
    (:func:`skal.pairwise.sketch_error_bound`). ``‖g_u‖²`` and ``g_uᵀ G_S``
    are always exact.

    Cost, for ``N`` candidates and ``b`` picks: one forward and backward
    pass over the candidates and the labelled set (as :class:`DynamicAL`),
    then ``b − 1`` greedy updates of ``N · F`` multiply-adds each, with
    ``F`` the feature size per candidate. Memory: ``N · F`` numbers, with
    ``F = Σ_layers min(K M, L (K + M))`` exact (``K``, ``M``, ``L``: a
    layer's input and output width and positions; biases and BatchNorm add
    their size), or about ``k`` per sketched layer.

    Parameters
    ----------
    gamma : float, default=2.0
        Weight of the cross term ``G_Qᵀ G_S``. With ``float("inf")`` the
        objective is ``G_Qᵀ G_S`` alone, which has no pairwise terms, and
        the selection is DynamicAL's top-``b``.
    pairwise_weight : float, default=1.0
        ``λ``, the weight of the pairwise terms; 1 gives Δ(Q|S).
    pseudo_label : {"argmax", "sample"}, default="argmax"
        See :class:`DynamicAL`.
    sketch_size : int or None, default=None
        None computes the pairwise products exactly; an integer ``k``
        sketches every ``Linear`` or ``groups=1`` convolution whose exact
        feature is larger than ``k`` numbers per candidate.
    batch_size : int or None, default=None
        Samples per forward/backward pass (None: the network's evaluation
        batch size).
    fallback : {"vmap", "loop"}, default="vmap"
        See :class:`DynamicAL`.

    Attributes
    ----------
    objective_ : float
        The objective of the last selected batch, Δ(Q|S) for ``λ = 1`` (the
        sum of its marginal gains), with sketched pairwise terms if
        ``sketch_size`` is set.
    singles_ : float
        ``Σ_{u∈Q} Δ({u}|S)`` of the last selected batch; ``singles_ /
        objective_`` is its approximation ratio R(Q|S) when ``gamma = 2``.

    References
    ----------
    Wang, Huang, Shi, Lee, Hsieh, Ma, Jin, Huang, "Deep Active Learning by
    Leveraging Training Dynamics", NeurIPS (2022), eq. 13-14.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> import skal
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).reshape(-1, 1, 8, 8).astype(np.float32)
    >>> net = skal.NeuralNetClassifier(skal.nets.SmallCNN, max_epochs=5)
    >>> learner = skal.ActiveLearner(net, strategy="dynamic_al_batch", random_state=0)
    >>> learner = learner.fit(X[:60], y[:60])
    >>> idx = learner.query(X[60:400], n=10)
    >>> len(set(idx.tolist()))
    10
    """

    per_sample = False

    _parameter_constraints: dict = {
        **DynamicAL._parameter_constraints,
        "pairwise_weight": [Interval(Real, None, None, closed="neither")],
        "sketch_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        gamma=2.0,
        pairwise_weight=1.0,
        pseudo_label="argmax",
        sketch_size=None,
        batch_size=None,
        fallback="vmap",
    ):
        self.gamma = gamma
        self.pairwise_weight = pairwise_weight
        self.pseudo_label = pseudo_label
        self.sketch_size = sketch_size
        self.batch_size = batch_size
        self.fallback = fallback

    def select(self, context, X, n):
        """Greedy maximiser of Δ(Q|S) with ``|Q| = n``, in order of choice.

        Parameters
        ----------
        context : QueryContext
        X : array-like of shape (n_candidates, ...)
        n : int

        Returns
        -------
        indices : ndarray of shape (n,)
        """
        feats = self.features(context, X)
        return self._greedy(feats, n, context.random_state)

    def features(self, context, X) -> GradientFeatures:
        """Gradient features of the candidates, with ``dots = g_uᵀ G_S``.

        Parameters
        ----------
        context : QueryContext
        X : array-like of shape (n_candidates, ...)

        Returns
        -------
        features : skal.pairwise.GradientFeatures
        """
        self.validate(context.estimator)
        net = context.net("dynamic_al_batch")
        module = net.module_
        gamma = float(self.gamma)
        targets = DynamicAL(pseudo_label=self.pseudo_label)._targets(
            context.random_state
        )
        # the sketch's projections come from the learner's random state, so a
        # query is reproducible under ActiveLearner(random_state=...)
        seed = draw_seed(context.random_state)
        # eval mode: per-sample gradients exist only when the samples of a
        # batch do not interact (BatchNorm on running statistics), and
        # dropout would make g_u random; the mode is restored afterwards
        with eval_mode(module):
            engine = PairwiseGradients(
                module, sketch_size=self.sketch_size, seed=seed, fallback=self.fallback
            )
            g_s = None
            # G_S enters only through γ g_uᵀ G_S: with γ = 0 the pass over the
            # labelled set is skipped
            if gamma != 0.0:
                labelled = net.iter_batches(
                    context.X_labeled, context.y_labeled, self.batch_size
                )
                g_s = sum_gradient(module, labelled)
            # one engine for all batches: the sketch's projections are drawn
            # once, so features of different batches are comparable
            parts = [
                engine.features(xb, targets, vector=g_s)
                for xb, _ in net.iter_batches(X, batch_size=self.batch_size)
            ]
        return GradientFeatures.concat(parts)

    def validate(self, estimator):
        super().validate(estimator)
        check_net(estimator, "dynamic_al_batch")

    def _greedy(self, feats, n, random_state):
        gamma = float(self.gamma)
        lam = float(self.pairwise_weight)
        # The gains live on the CPU in float64: b − 1 updates add up pairwise
        # terms that can nearly cancel the singles (λ < 0), and the argmax
        # must not flip on float32 rounding.
        sq = feats.sq_norms.double().cpu().numpy()
        dots = None if feats.dots is None else feats.dots.double().cpu().numpy()
        if math.isinf(gamma):
            # the objective is G_Qᵀ G_S alone: sum of singles, no pair terms
            gain = dots.copy()
        else:
            gain = sq + (gamma * dots if dots is not None else 0.0)
        singles = gain.copy()
        # a random order breaks ties at random, as top_n does
        perm = random_state.permutation(len(gain))
        gain, singles = gain[perm], singles[perm]
        feats_p = _permute(feats, perm)
        if np.isnan(gain).any():
            raise ValueError("dynamicAL scores contain NaN")
        chosen = []
        available = np.ones(len(gain), dtype=bool)
        objective = 0.0
        for step in range(n):
            j = int(np.argmax(np.where(available, gain, -np.inf)))
            chosen.append(j)
            available[j] = False
            # the marginal gains of the picks sum to the objective of Q
            objective += gain[j]
            # Why one inner product per pick: adding q to Q raises every
            # candidate's marginal gain by 2 λ g_uᵀ g_q (the pair counted
            # once each way), so one pass over the features, n · F
            # multiply-adds, keeps all gains current. The last pick needs no
            # update, and without pairwise terms there is none to make.
            if step + 1 < n and not math.isinf(gamma) and lam != 0:
                gain = gain + 2.0 * lam * feats_p.inner(j).double().cpu().numpy()
        self.objective_ = float(objective)
        self.singles_ = float(singles[chosen].sum())
        return perm[np.asarray(chosen, dtype=int)]


def _permute(feats, perm):
    idx = torch.as_tensor(perm, device=feats.dense.device)
    return GradientFeatures(
        feats.sq_norms[idx],
        None if feats.dots is None else feats.dots[idx],
        feats.targets[idx],
        feats.dense[idx],
        [(u[idx], dy[idx]) for u, dy in feats.factored],
    )


class StochasticBatch(QueryStrategy):
    """Stochastic batch acquisition over a per-sample utility.

    Kirsch et al. (2023) replace top-``b`` selection by sampling ``b``
    candidates without replacement from a distribution over the pool set by
    the scores ``s_i`` of a per-sample strategy:

    - ``"power"``: ``p(i) ∝ s_i^β`` (needs ``s_i ≥ 0``),
    - ``"softmax"``: ``p(i) ∝ exp(β s_i)``,
    - ``"softrank"``: ``p(i) ∝ r_i^(−β)``, with ``r_i`` the rank of ``s_i``
      (1 for the largest).

    Sampling without replacement is the Gumbel-top-``b`` trick: the ``b``
    largest of ``log s_i``, ``s_i`` or ``−log r_i`` plus independent
    ``Gumbel(0, 1/β)`` noise. ``β → ∞`` gives top-``b`` selection and
    ``β = 0`` uniform sampling (for "power", among the candidates with
    ``s_i > 0`` first; zero scores are drawn last, in random order).

    The selection is random, so the strategy is set-based (``per_sample =
    False``): :meth:`select` returns the batch in the order of the noisy
    keys, and the base strategy's scores are available from the base
    strategy itself.

    Parameters
    ----------
    base : str or QueryStrategy, default="entropy"
        A per-sample strategy (registered name or object) giving ``s_i``.
    mode : {"power", "softmax", "softrank"}, default="power"
    beta : float, default=1.0
        Coldness ``β ≥ 0``; the paper's default is 1.

    References
    ----------
    Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron, Gal,
    "Stochastic Batch Acquisition: A Simple Baseline for Deep Active
    Learning", Transactions on Machine Learning Research (2023).

    Kool, van Hoof, Welling, "Stochastic Beams and Where to Find Them: The
    Gumbel-Top-k Trick for Sampling Sequences Without Replacement", ICML
    (2019).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skal
    >>> from skal.strategies import StochasticBatch
    >>> X, y = load_iris(return_X_y=True)
    >>> learner = skal.ActiveLearner(
    ...     LogisticRegression(), strategy=StochasticBatch("margin", beta=2.0),
    ...     random_state=0,
    ... ).fit(X[::10], y[::10])
    >>> learner.query(X, n=5).shape
    (5,)
    """

    per_sample = False

    _parameter_constraints: dict = {
        "base": [str, HasMethods(["utility"])],
        "mode": [Options(set(_MODES))],
        "beta": [Interval(Real, 0, None, closed="both")],
    }

    def __init__(self, base="entropy", mode="power", beta=1.0):
        self.base = base
        self.mode = mode
        self.beta = beta

    @property
    def default_subset_size(self):
        """The base strategy's default candidate subset."""
        return get_strategy(self.base).default_subset_size

    def select(self, context, X, n):
        """Sample ``n`` candidates without replacement, as described above.

        Parameters
        ----------
        context : QueryContext
        X : array-like of shape (n_candidates, ...)
        n : int

        Returns
        -------
        indices : ndarray of shape (n,)
        """
        self.validate(context.estimator)
        base = get_strategy(self.base)
        scores = np.asarray(base.utility(context, X), dtype=np.float64)
        if scores.ndim != 1 or np.isnan(scores).any():
            raise ValueError(
                f"the base strategy {base!r} returned scores that are not a 1-d "
                "array without NaN"
            )
        beta = float(self.beta)
        if self.mode == "power":
            if (scores < 0).any():
                raise ValueError(
                    f"mode='power' needs non-negative scores, but the base strategy "
                    f"{base!r} returned a minimum of {scores.min():.4g}; use "
                    "mode='softrank' or mode='softmax'"
                )
            # Gumbel-top-b on β log s_i samples ∝ s_i^β; log 0 = −inf puts
            # zero scores last
            with np.errstate(divide="ignore"):
                keys = np.log(scores)
        elif self.mode == "softmax":
            keys = scores
        else:
            order = np.argsort(-scores, kind="stable")
            ranks = np.empty(len(scores))
            ranks[order] = np.arange(1, len(scores) + 1)
            keys = -np.log(ranks)
        noise = context.random_state.gumbel(size=len(scores))
        if math.isinf(beta):
            noisy = keys
        else:
            with np.errstate(invalid="ignore"):
                noisy = beta * keys + noise
            # β = 0 would turn a key of −inf into NaN (0 · −inf): zero scores
            # stay last whatever β
            noisy = np.where(np.isneginf(keys), -np.inf, noisy)
        # the noise breaks ties, including those among keys of -inf
        order = np.lexsort((-noise, -noisy))
        return order[:n]

    def validate(self, estimator):
        super().validate(estimator)
        base = get_strategy(self.base)
        if not base.per_sample:
            raise ValueError(
                f"base must be a per-sample strategy (one with a utility), got "
                f"{self.base!r}, which selects sets"
            )
        base.validate(estimator)
