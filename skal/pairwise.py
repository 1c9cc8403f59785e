"""Inner products between per-sample gradients, from per-layer factors.

Batch-aware dynamicAL needs ``g_uᵀ g_q`` for every candidate ``u`` and every
already chosen ``q``, where ``g`` is a per-sample loss gradient over all
trainable parameters. :class:`PairwiseGradients` keeps, per candidate, a
compact *feature* of its gradient whose inner products give ``g_uᵀ g_q``
exactly, or estimate them through a random sketch with a stated error
bound. Per-sample gradients are never formed at full size for layers where
the factors are smaller.

One layer's weight gradient of one sample is ``G = dYᵀ U`` (``M × K``),
with ``U`` the layer input (``L × K``, unfolded patches for convolutions,
``L`` positions) and ``dY`` the gradient of the loss with respect to the
layer output (``L × M``). Per layer, the exact feature is the smaller of

- the factors ``(U, dY)``, ``L (K + M)`` numbers, with
  ``⟨G_u, G_q⟩ = ⟨dY_u dY_qᵀ, U_u U_qᵀ⟩`` (for ``L = 1``, e.g. a
  ``Linear`` layer on flat inputs: ``(dy_u·dy_q)(u_u·u_q)``);
- the materialized gradient ``G``, ``K M`` numbers.

Biases (``M``), BatchNorm affine parameters (``2 C``) and parameters without
a closed form (handled as in :class:`skal.gradients.PerSampleGradients`) are
kept as materialized vectors.

With ``sketch_size=k``, every weight whose exact feature has more than
``k`` numbers per sample is replaced by ``k`` numbers, through whichever of
two Gaussian projections costs fewer operations for the layer:

- rank-one ("tensorized") projections, built from the factors without
  forming ``G`` (``Linear`` and ``groups=1`` convolutions; for a
  convolution, ``U B`` is one convolution with ``k`` filters)::

      z_j = (a_jᵀ G b_j) / √k = Σ_l (a_j·dy_l)(b_j·u_l) / √k,   j = 1..k,

  with ``a_j ~ N(0, I_M)`` and ``b_j ~ N(0, I_K)`` (Sun et al., 2018;
  Rakhshan & Rabusseau, 2020). Each term ``t = (aᵀ G_u b)(aᵀ G_q b)`` is
  unbiased for ``⟨G_u, G_q⟩`` and, by Isserlis' theorem,

      Var t = ‖G_u‖²‖G_q‖² + ⟨G_u, G_q⟩² + 2‖G_q G_uᵀ‖² + 2‖G_uᵀ G_q‖²
              + 2 tr((G_uᵀ G_q)²)  ≤  8 ‖G_u‖² ‖G_q‖²;

- a dense Gaussian projection ``z = Rᵀ vec(G) / √k`` of the materialized
  gradient (``R`` of shape ``(K M, k)``, used only while ``K M k ≤ 2²⁵``),
  for which ``Var t = ‖G_u‖²‖G_q‖² + ⟨G_u, G_q⟩² ≤ 2 ‖G_u‖²‖G_q‖²``
  (Johnson & Lindenstrauss, 1984; Achlioptas, 2003).

Projections are drawn independently per layer and once per
:class:`PairwiseGradients` object, so the estimate ``ĝ_uq`` of ``g_uᵀ g_q``
(exact parts plus sketched layers) is unbiased with
``Var ĝ_uq ≤ (8 / k) Σ_layers ‖G_u‖²‖G_q‖² ≤ (8 / k) ‖g_u‖²‖g_q‖²`` and, by
Chebyshev's inequality, for every pair and every ``δ ∈ (0, 1)``::

    P( |ĝ_uq − g_uᵀ g_q| ≥ √(8 / (k δ)) · ‖g_u‖ ‖g_q‖ ) ≤ δ.

:func:`sketch_error_bound` returns ``√(8 / (k δ))``.

References
----------
Sun, Guo, Tropp, Udell, "Tensor random projection for low memory
dimension reduction", NeurIPS workshop on relational representation
learning (2018).

Rakhshan, Rabusseau, "Tensorized random projections", AISTATS (2020).

Johnson, Lindenstrauss, "Extensions of Lipschitz mappings into a Hilbert
space", Contemporary Mathematics 26 (1984).

Achlioptas, "Database-friendly random projections: Johnson-Lindenstrauss
with binary coins", Journal of Computer and System Sciences 66 (2003).

Goodfellow, "Efficient per-example gradient computations", arXiv:1510.01799
(2015), for the per-layer factors.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn

from .gradients import (
    PerSampleGradients,
    _accumulate,
    _rule_for,
    _slice,
    _weight_vector,
)

__all__ = ["GradientFeatures", "PairwiseGradients", "sketch_error_bound"]

# largest dense projection matrix (numbers) a layer may use: K M k
_DENSE_LIMIT = 2**25


def sketch_error_bound(sketch_size: int, delta: float) -> float:
    """Relative error of the sketched inner products at confidence ``1 − δ``.

    For every pair of samples, ``|ĝ_uq − g_uᵀ g_q| < t · ‖g_u‖ ‖g_q‖`` with
    probability at least ``1 − δ`` over the sketch, with
    ``t = √(8 / (sketch_size · δ))`` (Chebyshev's inequality and the variance
    bound of the module docstring).

    Parameters
    ----------
    sketch_size : int
        ``k``, numbers per sketched layer.
    delta : float in (0, 1)
        Failure probability per pair.

    Returns
    -------
    t : float

    Examples
    --------
    >>> from skal.pairwise import sketch_error_bound
    >>> round(sketch_error_bound(800, 0.1), 3)
    0.316
    """
    _check_sketch_size(sketch_size, allow_none=False)
    if not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise ValueError(f"delta must be a number in (0, 1), got {delta!r}")
    return math.sqrt(8.0 / (sketch_size * delta))


@dataclass
class GradientFeatures:
    """Compact features of a set of per-sample gradients.

    ``⟨g_i, g_j⟩ = dense[i]·dense[j] + Σ_f ⟨dY_i dY_jᵀ, U_i U_jᵀ⟩`` over the
    factored layers ``f``: exact, or an unbiased estimate for sketched
    layers.

    Parameters
    ----------
    sq_norms : torch.Tensor of shape (n,)
        Exact ``‖g_i‖²``.
    dots : torch.Tensor of shape (n,) or None
        Exact ``g_iᵀ v`` for the vector passed to
        :meth:`PairwiseGradients.features`.
    targets : torch.Tensor of shape (n,)
        The labels the gradients are taken at.
    dense : torch.Tensor of shape (n, d)
        Materialized (or sketched) parts, concatenated.
    factored : list of (torch.Tensor, torch.Tensor)
        Per factored layer, ``U`` of shape (n, L, K) and ``dY`` of shape
        (n, L, M).
    """

    sq_norms: torch.Tensor
    dots: torch.Tensor | None
    targets: torch.Tensor
    dense: torch.Tensor
    factored: list = field(default_factory=list)

    def __len__(self):
        return self.dense.shape[0]

    @property
    def size_per_sample(self) -> int:
        """Numbers stored per sample."""
        return self.dense.shape[1] + sum(
            u[0].numel() + dy[0].numel() for u, dy in self.factored
        )

    @classmethod
    def concat(cls, parts):
        """Join the features of consecutive batches (same layout).

        Parameters
        ----------
        parts : iterable of GradientFeatures
            Features of consecutive batches, in order.

        Returns
        -------
        features : GradientFeatures
        """
        parts = list(parts)
        dots = None if parts[0].dots is None else torch.cat([p.dots for p in parts])
        factored = [
            (
                torch.cat([p.factored[i][0] for p in parts]),
                torch.cat([p.factored[i][1] for p in parts]),
            )
            for i in range(len(parts[0].factored))
        ]
        return cls(
            torch.cat([p.sq_norms for p in parts]),
            dots,
            torch.cat([p.targets for p in parts]),
            torch.cat([p.dense for p in parts]),
            factored,
        )

    def inner(self, j: int, *, chunk: int = 256) -> torch.Tensor:
        """``⟨g_i, g_j⟩`` for every ``i``, for one sample ``j`` of the set.

        Costs ``n (d + Σ_f L_f² (K_f + M_f))`` multiply-adds.

        Parameters
        ----------
        j : int
            Index of the sample in the set.
        chunk : int, default=256
            Samples per block of the factored layers' Gram products (bounds
            the memory of one block to ``chunk · L²`` numbers).

        Returns
        -------
        inner : torch.Tensor of shape (n,)
        """
        out = self.dense @ self.dense[j]
        for u, dy in self.factored:
            if u.shape[1] == 1:
                # one position: ⟨dy_i ⊗ u_i, dy_j ⊗ u_j⟩ is a product of two
                # dot products, no L × L Gram matrix needed
                out = out + (dy[:, 0] @ dy[j, 0]) * (u[:, 0] @ u[j, 0])
                continue
            # ⟨G_i, G_j⟩ = ⟨dY_i dY_jᵀ, U_i U_jᵀ⟩: two L × L Gram matrices per
            # sample i. In blocks of samples, since all n at once would take
            # n L² numbers, more than the features themselves when L > K + M
            parts = []
            for s in range(0, len(u), chunk):
                gram_dy = torch.matmul(dy[s : s + chunk], dy[j].T)
                gram_u = torch.matmul(u[s : s + chunk], u[j].T)
                parts.append((gram_dy * gram_u).sum((1, 2)))
            out = out + torch.cat(parts)
        return out

    def gram(self) -> torch.Tensor:
        """The full ``n × n`` matrix of inner products (for small sets)."""
        return torch.stack([self.inner(j) for j in range(len(self))], 1)


class PairwiseGradients:
    """Per-sample gradient features whose inner products are gradient products.

    The loss of sample ``i`` is the cross-entropy of the module's logits
    against ``targets[i]``, ``g_i`` its gradient over all trainable
    parameters (as in :class:`skal.gradients.PerSampleGradients`, which also
    gives the exact ``‖g_i‖²`` and ``g_iᵀ v`` computed here from the same
    forward and backward pass).

    Memory per sample (numbers), summed over the layers:

    - exact (``sketch_size=None``): ``min(K M, L (K + M))`` per ``Linear``
      or ``Conv2d`` (``groups=1``) weight, ``K M`` per other convolution
      weight, ``M`` per bias, ``2 C`` per BatchNorm, the parameter count of
      layers without a closed form;
    - sketched: ``k`` instead, for each weight whose exact feature is larger
      than ``k``, plus shared projections of ``k (K + M)`` (rank-one) or
      ``k K M`` (dense) numbers per such layer.

    Cost of :meth:`features` per batch of ``n``: one forward and one backward
    pass to the layer outputs, the closed forms of ``PerSampleGradients``,
    and per sketched layer ``n · min(L k (K + M), L K M + K M k)``
    multiply-adds (rank-one: a convolution with ``k`` filters and a
    ``1 × 1`` projection of ``dY``; dense: the materialized gradient times
    ``R``).
    :meth:`GradientFeatures.inner` costs ``n`` times the per-sample size
    (``L² (K + M)`` for a factored layer with ``L > 1``).

    Parameters
    ----------
    module : torch.nn.Module
        In eval mode (see :class:`skal.gradients.PerSampleGradients`).
    sketch_size : int or None, default=None
        None keeps exact features; an integer ``k`` sketches large layers
        (see the module documentation for the error bound).
    seed : int, default=0
        Seed of the sketch's Gaussian projections.
    fallback : {"vmap", "loop"}, default="vmap"
        How parameters without a closed form are differentiated.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skal.pairwise import PairwiseGradients
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    >>> x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    >>> feats = PairwiseGradients(net).features(x, y)
    >>> def grad(i):
    ...     loss = nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1])
    ...     return torch.cat([g.flatten() for g in torch.autograd.grad(
    ...         loss, list(net.parameters()))])
    >>> bool(torch.isclose(feats.inner(1)[3], grad(1) @ grad(3)))
    True
    """

    def __init__(self, module: nn.Module, *, sketch_size=None, seed=0, fallback="vmap"):
        _check_sketch_size(sketch_size, allow_none=True)
        self.module = module
        self.sketch_size = sketch_size
        self.seed = seed
        self.fallback = fallback
        self._engine = PerSampleGradients(module, fallback=fallback)
        self._projections: dict = {}

    def features(self, x, targets, *, vector=None) -> GradientFeatures:
        """Features, exact squared norms and inner products with ``vector``.

        Parameters
        ----------
        x : torch.Tensor or dict of str to torch.Tensor
        targets : torch.Tensor of shape (n,) or callable
            Class indices, or a function of the detached logits.
        vector : dict of str to torch.Tensor or None, default=None
            Parameter-space vector for ``dots`` (e.g. ``G_S``).

        Returns
        -------
        features : GradientFeatures
        """
        layers = self._engine.layer_gradients(x, targets)
        logits, t, n = layers.logits, layers.targets, len(layers.targets)
        sq = torch.zeros(n, dtype=logits.dtype, device=logits.device)
        dots = None if vector is None else torch.zeros_like(sq)
        dense, factored = [], []
        with torch.no_grad():
            for m, ps, calls in layers.layers:
                self._layer_features(m, ps, calls, vector, (sq, dots), dense, factored)
        rest = layers.rest
        # the recorded inputs and output gradients can be large: free them
        # before the fallback's own forward and backward passes
        del layers
        if rest:
            # parameters no layer rule covers: materialized gradients, kept
            # whole in the dense part
            for name, flat in self._engine._fallback_grads(x, t, rest):
                v = None if vector is None else vector.get(name)
                _accumulate(sq, dots, flat, v)
                dense.append(flat)
        dense = (
            torch.cat(dense, 1)
            if dense
            else torch.zeros(n, 0, dtype=sq.dtype, device=sq.device)
        )
        return GradientFeatures(sq, dots, t, dense, factored)

    # ----------------------------------------------------------- internals
    def _layer_features(self, m, ps, calls, vector, exact, dense, factored):
        """Append one layer's features to ``dense`` and ``factored``; add its
        exact ``‖g‖²`` and ``gᵀv`` to the tensors ``exact`` in place."""
        rule = _rule_for(m)
        sq, dots = exact
        # biases and normalization scales: small, kept whole
        for name, g in rule.vector_grads(m, calls, ps):
            _accumulate(sq, dots, g, _slice(vector, ps[name]))
            dense.append(g)
        if not (rule.has_matrix and "weight" in ps):
            return
        vw = _weight_vector(vector, ps, calls[0][1].dtype)
        route = self._weight_route(rule, m, calls)
        if route in ("materialized", "dense sketch"):
            g = rule.weight_grads(m, calls)
            _accumulate(sq, dots, g, vw)
            if route == "dense sketch":
                g = g @ self._dense_projection(m, g) / math.sqrt(self.sketch_size)
            dense.append(g)
            return
        # the factors are never multiplied out: the exact norms and dots come
        # from the layer's cheapest closed forms, as in PerSampleGradients
        s, d = rule.weight_stats(m, calls, vw, True)
        sq += s
        if d is not None and dots is not None:
            dots += d
        if route == "rank-one sketch":
            a, b = self._projection(m, rule.dims(m, calls), calls[0][1])
            dense.append(rule.sketch(m, calls, a, b) / math.sqrt(self.sketch_size))
        else:
            factored.append(rule.factors(m, calls))

    def _weight_route(self, rule, m, calls):
        """How a weight's feature is kept: ``"factored"`` (``U`` and ``dY``),
        ``"materialized"`` (``G``), ``"dense sketch"`` or ``"rank-one
        sketch"``."""
        k_in, m_out, length = rule.dims(m, calls)
        # Exact: the factors take L (K + M) numbers a sample and G takes K M;
        # keep the smaller, since GradientFeatures.inner costs n times the
        # size (L² (K + M) for factors, whose Gram products are L × L).
        factors_smaller = rule.factorable(m) and length * (k_in + m_out) < k_in * m_out
        exact_size = length * (k_in + m_out) if factors_smaller else k_in * m_out
        route = "factored" if factors_smaller else "materialized"
        k = self.sketch_size
        if k is None or exact_size <= k:
            return route
        # Sketched: the cheaper of a dense Gaussian projection of G (L K M to
        # form G, K M k to project it) and the rank-one projections from the
        # factors (L k (K + M)). The dense one needs its K M × k matrix in
        # memory, hence the cap; a layer fitting neither stays exact.
        dense_cost = length * k_in * m_out + k_in * m_out * k
        rank_one_cost = length * k * (k_in + m_out)
        small = k_in * m_out * k <= _DENSE_LIMIT
        if small and (dense_cost < rank_one_cost or not rule.sketchable(m)):
            return "dense sketch"
        if rule.sketchable(m):
            return "rank-one sketch"
        return route

    def _dense_projection(self, m, like):
        """The layer's dense projection ``R`` (K M × k), drawn on first use and
        kept for every later batch."""
        # Kept per layer, since the features of all batches must be sketched
        # by the same projection for their inner products to estimate the
        # gradients' (a fresh draw per batch would make cross-batch products
        # meaningless). Drawn on the CPU in float32, then moved, so that the
        # same seed gives the same sketch on every device and dtype.
        key = (id(m), "dense")
        if key not in self._projections:
            gen = self._generator()
            r = torch.randn(
                like.shape[1], self.sketch_size, generator=gen, dtype=torch.float32
            )
            self._projections[key] = r.to(device=like.device, dtype=like.dtype)
        return self._projections[key]

    def _generator(self):
        # a different stream per projection (layers in forward order), so
        # that layers' projections are independent, as the variance bound of
        # the module docstring assumes
        return torch.Generator().manual_seed(
            (self.seed * 1_000_003 + len(self._projections)) % (2**63)
        )

    def _projection(self, m, dims, like):
        """The layer's rank-one projections ``a`` (M × k) and ``b`` (K × k),
        drawn on first use and kept for every later batch."""
        k_in, m_out, _ = dims
        key = (id(m), "rank_one")
        if key not in self._projections:
            gen = self._generator()
            k = self.sketch_size
            a = torch.randn(m_out, k, generator=gen, dtype=torch.float32)
            b = torch.randn(k_in, k, generator=gen, dtype=torch.float32)
            self._projections[key] = (
                a.to(device=like.device, dtype=like.dtype),
                b.to(device=like.device, dtype=like.dtype),
            )
        return self._projections[key]


def _check_sketch_size(sketch_size, *, allow_none):
    if sketch_size is None and allow_none:
        return
    if (
        not isinstance(sketch_size, numbers.Integral)
        or isinstance(sketch_size, bool)
        or sketch_size < 1
    ):
        expected = "None or a positive integer" if allow_none else "a positive integer"
        raise ValueError(f"sketch_size must be {expected}, got {sketch_size!r}")
