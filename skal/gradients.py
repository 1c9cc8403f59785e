"""Exact per-sample gradient statistics without per-sample gradients in memory.

dynamicAL scores a candidate ``x`` by the squared norm of its loss gradient
``g_x`` over all trainable parameters and by the inner product of ``g_x`` with
a fixed parameter-space vector (the summed gradient of the labelled set).
:class:`PerSampleGradients` computes both for a batch with one forward pass
and one backward pass to the layers' outputs, then closed forms per layer,
one rule per layer type in a table that :mod:`skal.pairwise` shares
(``_LAYER_RULES``):

- ``nn.Linear`` and ``nn.Conv1d/2d/3d``: with ``U`` the layer input
  (unfolded for convolutions) and ``dY`` the gradient of the loss with respect
  to the layer output, one sample's weight gradient is ``dYᵀ U`` (a sum over
  the spatial positions or tokens). Its squared norm is computed either by
  materializing the per-sample weight gradients of the batch (for
  convolutions: one grouped weight-gradient call with the samples as
  groups), or by the "ghost norm" identity ``‖dYᵀ U‖² = ⟨dY dYᵀ, U Uᵀ⟩``
  (Gram matrices over positions; ``Linear`` and ``Conv2d`` with
  ``groups=1``), whichever costs fewer operations for the layer: the ghost
  norm wins when there are few positions relative to the channels. The
  inner product with ``v`` comes from the materialized gradients, or is
  ``⟨dY, layer(U; v)⟩``. The bias gradient is ``Σ dY``.
- ``nn.BatchNorm{1,2,3}d`` using running statistics (eval mode): the affine
  parameters' per-sample gradients are the per-channel sums of ``dY·x̂`` and
  ``dY``.

A layer called several times in one forward pass (shared weights) has the
positions of all its calls concatenated, so the gradients add as they
should. Outputs that later operations modify in place (``nn.ReLU(inplace=True)``,
``out += identity`` in torchvision's ResNets) are detected through tensor
version counters and recorded before the modification. Every trainable
parameter not covered this way (other layer types, parameters used outside
their module, shared between modules, ...) goes to a plain fallback,
``torch.func.vmap(grad)`` or a per-sample loop, restricted to those
parameters.

Per-sample gradients are only defined when the samples of a batch do not
interact, i.e. in eval mode: BatchNorm must use running statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import logits_of

_FALLBACKS = ("vmap", "loop")
# the most bytes of temporaries a layer's closed forms take at a time on the
# CPU (see _by_samples)
_CHUNK_BYTES = 8 * 2**20


@dataclass
class GradientStats:
    """Per-sample statistics of the loss gradient for one batch.

    Parameters
    ----------
    sq_norms : torch.Tensor of shape (n_samples,) or None
        ``‖g_i‖²`` over all trainable parameters.
    dots : torch.Tensor of shape (n_samples,) or None
        ``g_iᵀ v`` for the given parameter-space vector ``v``.
    logits : torch.Tensor of shape (n_samples, n_classes)
        The module's (detached) logits.
    targets : torch.Tensor of shape (n_samples,)
        The class indices the loss was computed against.
    """

    sq_norms: torch.Tensor | None
    dots: torch.Tensor | None
    logits: torch.Tensor
    targets: torch.Tensor


@dataclass
class LayerGradients:
    """What :meth:`PerSampleGradients.layer_gradients` returns.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, n_classes)
        Detached logits of the batch.
    targets : torch.Tensor of shape (n,)
        The labels the gradients are taken at.
    layers : list of (module, params, calls)
        Per supported layer, its parameters (as ``_candidates`` names them)
        and, per call in the forward pass, the detached input and the
        gradient of the summed loss with respect to the output.
    rest : list of (str, torch.nn.Parameter)
        Trainable parameters no closed form covers (the fallback's).
    """

    logits: torch.Tensor
    targets: torch.Tensor
    layers: list
    rest: list


class PerSampleGradients:
    """Per-sample squared gradient norms and inner products, exact and batched.

    The loss of sample ``i`` is the cross-entropy of the module's logits
    against ``targets[i]``; ``g_i`` is its gradient with respect to every
    trainable parameter of ``module``. Memory stays bounded by the batch
    passed to :meth:`stats`: no ``n_samples × n_parameters`` matrix is ever
    formed.

    Parameters
    ----------
    module : torch.nn.Module
        Should be in eval mode (dropout off, BatchNorm on running
        statistics); a BatchNorm layer that normalizes with batch statistics
        raises, since samples of a batch then interact. Its forward may
        return the logits or a tuple whose first element is the logits.
    fallback : {"vmap", "loop"}, default="vmap"
        How parameters outside the supported layers are handled:
        ``torch.func.vmap`` of ``torch.func.grad`` over the batch, or a loop
        of single-sample backward passes.

    Attributes
    ----------
    fallback_parameters_ : list of str
        Names of the parameters that the last call of :meth:`stats` handled
        with the fallback.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skal.gradients import PerSampleGradients
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    >>> x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    >>> stats = PerSampleGradients(net).stats(x, y)
    >>> loss = nn.functional.cross_entropy(net(x[:1]), y[:1])
    >>> g = torch.autograd.grad(loss, list(net.parameters()))
    >>> ref = sum((t ** 2).sum() for t in g)
    >>> bool(torch.isclose(stats.sq_norms[0], ref))
    True
    """

    def __init__(self, module: nn.Module, *, fallback: str = "vmap"):
        if fallback not in _FALLBACKS:
            raise ValueError(f"fallback must be one of {_FALLBACKS}, got {fallback!r}")
        self.module = module
        self.fallback = fallback
        self._clone_outputs: set[nn.Module] = set()
        self._clone_inputs: set[nn.Module] = set()

    def stats(
        self,
        x,
        targets: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
        *,
        vector: Mapping[str, torch.Tensor] | None = None,
        norms: bool = True,
    ) -> GradientStats:
        """Squared gradient norms and inner products for one batch.

        Parameters
        ----------
        x : torch.Tensor or dict of str to torch.Tensor
            The batch, on the module's device; a dict is passed as keyword
            arguments.
        targets : torch.Tensor of shape (n_samples,) or callable
            Class indices, or a function of the detached logits returning
            them (pseudo-labels from the same forward pass).
        vector : dict of str to torch.Tensor or None, default=None
            A parameter-space vector keyed by parameter name (as in
            ``module.named_parameters()``), e.g. from :func:`sum_gradient`.
            Parameters missing from it count as zero. If None, no inner
            products are computed.
        norms : bool, default=True
            Whether to compute the squared norms.

        Returns
        -------
        stats : GradientStats
        """
        layers = self.layer_gradients(x, targets)
        logits, t, n = layers.logits, layers.targets, len(layers.targets)
        zeros = torch.zeros(n, dtype=logits.dtype, device=logits.device)
        sq = zeros.clone() if norms else None
        dots = zeros.clone() if vector is not None else None
        with torch.no_grad():
            for m, ps, calls in layers.layers:
                s, d = _layer_stats(m, ps, calls, vector, norms)
                if norms:
                    sq += s
                if vector is not None:
                    dots += d
        rest = layers.rest
        del layers
        self.fallback_parameters_ = [n_ for n_, _ in rest]
        if rest:
            s, d = self._fallback_stats(x, t, rest, vector, norms)
            if norms:
                sq += s
            if vector is not None:
                dots += d
        return GradientStats(sq, dots, logits.detach(), t)

    def layer_gradients(self, x, targets) -> LayerGradients:
        """One forward and one backward pass to the supported layers' outputs.

        The shared first step of every per-layer closed form (here and in
        :mod:`skal.pairwise`): the summed cross-entropy at ``targets`` is
        differentiated with respect to the output of every call of every
        supported layer whose recorded batch size is the batch's.

        Parameters
        ----------
        x : torch.Tensor or dict of torch.Tensor
            One batch of inputs.
        targets : torch.Tensor of int or callable
            Class indices, or a function of the detached logits.

        Returns
        -------
        layers : LayerGradients
        """
        named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        candidates = _candidates(self.module, named)
        n = _batch_size(x)
        with torch.enable_grad():
            records = self._forward(x, candidates)
            logits = records.logits
            with torch.no_grad():
                t = targets(logits.detach()) if callable(targets) else targets
            t = torch.as_tensor(t, device=logits.device).long()
            loss = F.cross_entropy(logits, t, reduction="sum")
            covered = {
                m: ps
                for m, ps in candidates.items()
                if records.calls.get(m)
                and all(c[0].shape[0] == n for c in records.calls[m])
            }
            outs = [c[1] for m in covered for c in records.calls[m]]
            grads = torch.autograd.grad(loss, outs, allow_unused=True) if outs else ()
        grads = iter(grads)
        layers = [
            (
                m,
                ps,
                [
                    (inp.detach(), torch.zeros_like(out) if g is None else g)
                    for (inp, out), g in zip(records.calls[m], grads)
                ],
            )
            for m, ps in covered.items()
        ]
        done = {id(p) for ps in covered.values() for _, p in ps.values()}
        rest = [(n_, p) for n_, p in named if id(p) not in done]
        return LayerGradients(logits.detach(), t, layers, rest)

    # ----------------------------------------------------------- internals
    def _forward(self, x, candidates):
        """One forward pass recording supported layers' inputs and outputs.

        Layers whose recorded input or output is modified in place later in
        the pass get copies on a second try.
        """
        # Why copies, and why retry: the closed forms need each layer's input
        # U and the gradient with respect to its output, as the layer saw
        # and produced them. An in-place operation later in the pass
        # (``ReLU(inplace=True)``, ``out += identity``) overwrites the
        # recorded tensor: U would be wrong, and autograd would give the
        # gradient with respect to the overwritten value (after the ReLU,
        # after the residual sum), not the layer's output. Which
        # tensors are overwritten depends on the module's own forward code,
        # so it is found by running it: the first pass records without
        # copies and compares version counters; the layers found get copies
        # (their hook hands a clone downstream, or a pre-hook gives the
        # layer a clone of its input) and the pass is run again. The sets
        # persist on the engine, so later batches take one pass. Copying
        # everything instead would double the activation memory of every
        # model to serve the few that modify in place. A copy can change
        # which tensor a later in-place operation or view touches, hence
        # more than one retry; a layer still overwritten after that is not
        # fixed by copying, and an error beats wrong scores.
        for _ in range(3):
            rec = _Recorder(candidates, self._clone_inputs, self._clone_outputs)
            with rec:
                out = _call(self.module, x)
            rec.logits = logits_of(out)
            bad_in, bad_out = rec.modified_in_place()
            if not bad_in and not bad_out:
                return rec
            self._clone_inputs |= bad_in
            self._clone_outputs |= bad_out
        raise RuntimeError(
            "the inputs or outputs of some layers are still modified in place "
            "after copying them; cannot compute per-sample gradients"
        )

    def _fallback_stats(self, x, targets, rest, vector, norms):
        grads = self._fallback_grads(x, targets, rest)
        like = grads[0][1]
        sq = torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)
        dots = torch.zeros_like(sq)
        for name, flat in grads:
            v = None if vector is None else vector.get(name)
            _accumulate(sq, dots, flat, v, norms)
        return sq, dots

    def _fallback_grads(self, x, targets, rest):
        """``[(name, g)]``, ``g`` of shape (n, size): the per-sample
        gradients of the parameters ``rest`` that no layer rule covers."""
        names = [n for n, _ in rest]
        if self.fallback == "vmap":
            grads = _vmap_grads(self.module, x, targets, names)
        else:
            grads = _loop_grads(self.module, x, targets, [p for _, p in rest])
        n = targets.shape[0]
        return [(name, g.reshape(n, -1)) for name, g in zip(names, grads)]


class _Recorder:
    """Forward hooks recording (input, output) of each call of given modules."""

    def __init__(self, candidates, clone_inputs, clone_outputs):
        self.candidates = candidates
        self.clone_inputs = clone_inputs
        self.clone_outputs = clone_outputs
        self.calls: dict[nn.Module, list] = {}
        self._versions: list = []
        self._handles: list = []
        self.logits = None

    def __enter__(self):
        for m in self.candidates:
            if m in self.clone_inputs:
                self._handles.append(m.register_forward_pre_hook(_clone_input))
            self._handles.append(m.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False

    def _hook(self, module, inputs, output):
        if not inputs or not isinstance(inputs[0], torch.Tensor):
            return None
        if not isinstance(output, torch.Tensor):
            return None
        inp = inputs[0]
        self.calls.setdefault(module, []).append((inp, output))
        self._versions.append((module, inp, inp._version, output, output._version))
        if module in self.clone_outputs:
            return output.clone()
        return None

    def modified_in_place(self):
        bad_in, bad_out = set(), set()
        for module, inp, v_in, out, v_out in self._versions:
            if inp._version != v_in:
                bad_in.add(module)
            if out._version != v_out:
                bad_out.add(module)
        return bad_in, bad_out


def _clone_input(module, inputs):
    return (inputs[0].clone(), *inputs[1:])


def _layer_stats(module, params, calls, vector, norms):
    """Per-sample squared norm and inner product for one layer's parameters.

    ``params`` maps the module's local parameter names to (full name,
    parameter); ``vector`` is keyed by full names. The layer's rule (see
    ``_LAYER_RULES``) gives the closed forms.
    """
    rule = _rule_for(module)
    dy0 = calls[0][1]
    sq = torch.zeros(dy0.shape[0], dtype=dy0.dtype, device=dy0.device)
    dot = torch.zeros_like(sq)
    for name, g in rule.vector_grads(module, calls, params):
        _accumulate(sq, dot, g, _slice(vector, params[name]), norms)
    if rule.has_matrix and "weight" in params:
        vw = _weight_vector(vector, params, dy0.dtype)
        s, d = rule.weight_stats(module, calls, vw, norms)
        if s is not None:
            sq += s
        if d is not None:
            dot += d
    return sq, dot


def _accumulate(sq, dot, g, v, norms=True):
    """Add the per-sample gradients ``g`` (n, size) of one parameter to
    ``‖g‖²`` (if ``norms``) and to ``gᵀv`` (if ``v`` and ``dot`` are not
    None), in place."""
    if norms:
        sq += g.pow(2).sum(1)
    if v is not None and dot is not None:
        dot += g @ v.reshape(-1).to(g.dtype)


def _weight_vector(vector, params, dtype):
    """The weight's slice of ``vector`` in the computation's dtype, or None."""
    vw = _slice(vector, params["weight"])
    return None if vw is None else vw.to(dtype)


# ----------------------------------------------------------- layer rules
class _LayerRule:
    """The closed forms of one layer type, shared by every per-sample quantity.

    A rule turns one layer's recorded ``calls`` (per call of the layer in
    the forward pass: its detached input ``U`` and the gradient ``dY`` of
    the summed loss with respect to its output) into per-sample gradient
    quantities. :class:`PerSampleGradients` asks it for squared norms and
    inner products, :class:`skal.pairwise.PairwiseGradients` for features
    whose inner products are gradient inner products. Both read the same
    methods, so each layer type's maths is written once.

    A new layer type is one subclass, one entry of ``_LAYER_RULES`` and one
    case of the test that checks every entry against autograd.

    Attributes
    ----------
    types : tuple of type
        The module classes the rule handles.
    has_matrix : bool
        Whether the module's ``weight`` is a matrix whose per-sample
        gradient is ``G = dYᵀ U`` (``M × K``; ``U`` of shape ``L × K``,
        ``L`` positions), handled by the methods from :meth:`dims` on.
        Every other parameter comes from :meth:`vector_grads`.
    """

    types: tuple = ()
    has_matrix = False

    def covers(self, module):
        """Whether the closed forms handle ``module``'s direct parameters;
        raises where its per-sample gradients are undefined."""
        return True

    def vector_grads(self, module, calls, params):
        """``[(local name, g)]`` for the parameters in ``params`` that are
        kept whole (biases, normalization scales), ``g`` of shape (n, size)."""
        raise NotImplementedError

    def dims(self, module, calls):
        """``(K, M, L)``: the weight's input and output widths and the number
        of positions over all calls."""
        raise NotImplementedError

    def factorable(self, module):
        """Whether :meth:`factors` can build ``U`` for the module."""
        raise NotImplementedError

    def sketchable(self, module):
        """Whether :meth:`sketch` can project ``G`` without forming it."""
        raise NotImplementedError

    def weight_stats(self, module, calls, vw, norms):
        """``‖G‖²`` (None unless ``norms``) and ``⟨G, vw⟩`` (None if ``vw``
        is None) per sample, by the layer's cheapest route."""
        raise NotImplementedError

    def weight_grads(self, module, calls):
        """The per-sample weight gradients, shape (n, K M)."""
        raise NotImplementedError

    def factors(self, module, calls):
        """``(U, dY)`` of shapes (n, L, K) and (n, L, M), the calls'
        positions concatenated: ``G = dYᵀ U``."""
        raise NotImplementedError

    def sketch(self, module, calls, a, b):
        """``z[:, j] = a_jᵀ G b_j`` for the columns of ``a`` (M × k) and
        ``b`` (K × k), without forming ``G``."""
        raise NotImplementedError


class _LinearRule(_LayerRule):
    """``nn.Linear``; its input may have token dimensions (the positions).

    ``weight_stats`` takes the cheapest of three routes per layer (see
    ``_linear_route`` for the cost rule): the outer product for one
    position, the ghost norm for few positions relative to the widths, the
    materialized gradients otherwise.
    """

    types = (nn.Linear,)
    has_matrix = True

    def vector_grads(self, module, calls, params):
        if "bias" not in params:
            return []
        return [("bias", sum(_tokens(dy).sum(1) for _, dy in calls))]

    def dims(self, module, calls):
        length = sum(_tokens(dy).shape[1] for _, dy in calls)
        return module.in_features, module.out_features, length

    def factorable(self, module):
        return True

    def sketchable(self, module):
        return True

    def weight_stats(self, module, calls, vw, norms):
        route, floats = _linear_route(calls, norms)
        return _by_samples(
            partial(_linear_rows, route=route, vw=vw, norms=norms), calls, floats
        )

    def weight_grads(self, module, calls):
        us, dys = _linear_factors(calls)
        return _linear_grads(us, dys).reshape(us[0].shape[0], -1)

    def factors(self, module, calls):
        us, dys = _linear_factors(calls)
        return _cat(us), _cat(dys)

    def sketch(self, module, calls, a, b):
        us, dys = _linear_factors(calls)
        return sum((dy @ a * (u @ b)).sum(1) for u, dy in zip(us, dys))


def _tokens(t):
    """``t`` of shape (n, ..., width) as (n, L, width): L positions."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _linear_factors(calls):
    """Per call, ``U`` (n, L, K) and ``dY`` (n, L, M) of a ``Linear`` layer."""
    return [_tokens(inp) for inp, _ in calls], [_tokens(dy) for _, dy in calls]


def _linear_grads(us, dys):
    """Per-sample ``G = Σ_calls dYᵀ U``, shape (n, M, K)."""
    return sum(torch.bmm(dy.transpose(1, 2), u) for u, dy in zip(us, dys))


def _linear_route(calls, norms):
    """How ``_LinearRule.weight_stats`` computes, and the floats per sample
    of its largest temporaries."""
    inp, dy = calls[0]
    k_in, m_out = inp.shape[-1], dy.shape[-1]
    length = sum(u[0].numel() // k_in for u, _ in calls)
    # Why this cost rule: per sample, with L positions (tokens), K inputs and
    # M outputs, materializing the weight gradient dYᵀU costs L·K·M
    # multiply-adds and K·M memory; the ghost norm ⟨dY dYᵀ, U Uᵀ⟩ costs
    # L²·(K + M) and L² memory. Dividing by L, the ghost norm is cheaper
    # exactly when L·(K + M) < K·M: few positions relative to the widths.
    # With one position the gradient is the outer product dy ⊗ u, whose
    # squared norm is |u|²·|dy|² at O(K + M). When only inner products are
    # needed (gamma=inf), no per-sample gradient is needed at all:
    # ⟨dY, U vᵀ⟩ is one extra matrix product per layer.
    if length == 1:
        return "outer", k_in + m_out
    if not norms or length * (k_in + m_out) < k_in * m_out:
        return "ghost", 2 * length * length + length * m_out
    return "materialized", k_in * m_out


def _linear_rows(calls, *, route, vw, norms):
    n = calls[0][1].shape[0]
    us, dys = _linear_factors(calls)
    sq = dot = None
    if route == "outer":
        u, dy = us[0][:, 0], dys[0][:, 0]
        if norms:
            sq = u.pow(2).sum(1) * dy.pow(2).sum(1)
        if vw is not None:
            dot = (dy * (u @ vw.T)).sum(1)
    elif route == "ghost":
        if norms:
            sq = _ghost_norm(_cat(us), _cat(dys))
        if vw is not None:
            dot = sum((dy * (u @ vw.T)).sum((1, 2)) for u, dy in zip(us, dys))
    else:
        gw = _linear_grads(us, dys)
        sq = gw.pow(2).sum((1, 2))
        if vw is not None:
            dot = gw.reshape(n, -1) @ vw.reshape(-1)
    return sq, dot


class _ConvRule(_LayerRule):
    """``nn.Conv1d/2d/3d``: ``U`` holds the input patches (``K = C_in/groups
    · kernel size``), one row per output position.

    ``weight_stats`` takes, per layer, the ghost norm over unfolded patches
    (``Conv2d``, ``groups=1``, few output positions relative to the
    channels), or the per-sample weight gradients themselves: from unfolded
    patches (``Conv2d`` with few input channels per group, see
    ``_unfold_is_faster``) or by one grouped weight-gradient call with the
    samples as groups (see ``_conv_route``).
    """

    types = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    has_matrix = True

    def vector_grads(self, module, calls, params):
        if "bias" not in params:
            return []
        return [("bias", sum(dy.flatten(2).sum(2) for _, dy in calls))]

    def dims(self, module, calls):
        return _conv_dims(module, calls)

    def factorable(self, module):
        # the patches are built (_unfold) for 2-d convolutions with one group
        return isinstance(module, nn.Conv2d) and module.groups == 1

    def sketchable(self, module):
        # b_j·u_l for every position is a convolution with one filter when
        # the layer has one group
        return module.groups == 1

    def weight_stats(self, module, calls, vw, norms):
        route, floats = _conv_route(module, calls, norms)
        rows = partial(_conv_rows, conv=module, route=route, vw=vw, norms=norms)
        return _by_samples(rows, calls, floats)

    def weight_grads(self, module, calls):
        per_sample = (
            _per_sample_conv_grad_unfold
            if _unfold_is_faster(module)
            else _per_sample_conv_grad
        )
        return sum(per_sample(module, inp, dy) for inp, dy in calls)

    def factors(self, module, calls):
        us, dys = _conv_factors(module, calls)
        return _cat(us), _cat(dys)

    def sketch(self, module, calls, a, b):
        # Σ_l (a_j·dy_l)(b_j·u_l): the columns of b, shaped as filters of the
        # layer, give every b_j·u_l in one convolution (no patches); a is a
        # 1 × 1 projection of dY
        filters = b.T.reshape(b.shape[1], *module.weight.shape[1:])
        z = 0
        for inp, dy in calls:
            ub = module._conv_forward(inp, filters, None).flatten(2)
            ya = torch.einsum("nml,mk->nkl", dy.flatten(2), a)
            z = z + (ub * ya).sum(2)
        return z


def _conv_factors(conv, calls):
    """Per call, unfolded patches ``U`` (n, L, K) and ``dY`` (n, L, M) of a
    ``Conv2d`` with ``groups=1``."""
    us = [_unfold(conv, inp).transpose(1, 2) for inp, _ in calls]
    dys = [dy.flatten(2).transpose(1, 2) for _, dy in calls]
    return us, dys


def _conv_dims(conv, calls):
    """``(K, M, L)`` of a convolution: a patch's size, the output channels,
    the output positions of all calls."""
    length = sum(dy[0, 0].numel() for _, dy in calls)
    return conv.weight[0].numel(), conv.out_channels, length


def _conv_route(conv, calls, norms):
    """How ``_ConvRule.weight_stats`` computes, and the floats per sample of
    its largest temporaries."""
    k_in, m_out, length = _conv_dims(conv, calls)
    # The cost rule of _linear_route with K = C_in·kh·kw (a patch) and L
    # output positions: the ghost norm pays off in late layers, whose maps
    # are small and channels many. It needs the unfolded patches, built
    # here for Conv2d with groups=1 only; other convolutions materialize.
    ghost = (
        isinstance(conv, nn.Conv2d)
        and conv.groups == 1
        and length * (k_in + m_out) < k_in * m_out
    )
    if not norms:
        return "ghost", m_out * length
    if ghost:
        return "ghost", k_in * length + 2 * length * length
    if _unfold_is_faster(conv):
        return "unfold", k_in * length + k_in * m_out
    return "grouped", 2 * k_in * m_out


def _unfold_is_faster(conv):
    """Whether per-sample weight gradients come faster from unfolded patches
    than from the grouped weight-gradient call."""
    # Why a channel threshold: the grouped call runs one weight-gradient
    # convolution with n·groups groups, and oneDNN's grouped kernels are
    # slow when each group has few input channels (the 3-channel first layer
    # of image models above all); there a batched matmul over unfolded
    # patches is faster. The patches take kh·kw times the memory of the
    # input, which grows with the channels, so wide layers keep the grouped
    # call. The crossover depends on the CPU's kernels; 32 input channels
    # per group is a coarse bound, not a tuned constant.
    return isinstance(conv, nn.Conv2d) and conv.in_channels // conv.groups < 32


def _conv_rows(calls, *, conv, route, vw, norms):
    sq = dot = None
    if route == "ghost":
        if norms:
            sq = _ghost_norm(*(_cat(parts) for parts in _conv_factors(conv, calls)))
        if vw is not None:
            dot = sum(
                (dy * conv._conv_forward(inp, vw, None)).flatten(1).sum(1)
                for inp, dy in calls
            )
        return sq, dot
    per_sample = (
        _per_sample_conv_grad_unfold if route == "unfold" else _per_sample_conv_grad
    )
    gw = sum(per_sample(conv, inp, dy) for inp, dy in calls)
    sq = gw.pow(2).sum(1)
    if vw is not None:
        dot = gw @ vw.reshape(-1)
    return sq, dot


def _by_samples(fn, calls, floats):
    """``fn(calls)``, a tuple of per-sample tensors (or None), on the CPU in
    chunks of samples whose temporaries (``floats`` per sample) take at most
    ``_CHUNK_BYTES``.

    Each sample's values are computed as in one pass (the closed forms never
    mix samples). Large temporaries are slow on a CPU: they leave the cache,
    and glibc maps fresh pages for every block above its mmap threshold
    (32 MiB at most), each page faulted in at first touch. The unfolded
    patches of the tutorial CNN's first layer take 236 KB a sample: 60 MB
    for 256 samples, which took 15 times as long as chunks of 32.
    """
    dy = calls[0][1]
    n = dy.shape[0]
    step = _samples_per_chunk(dy, floats)
    if step >= n:
        return fn(calls)
    parts = [
        fn([(inp[s : s + step], g[s : s + step]) for inp, g in calls])
        for s in range(0, n, step)
    ]
    return tuple(
        None if values[0] is None else torch.cat(values) for values in zip(*parts)
    )


def _samples_per_chunk(dy, floats):
    """How many samples of ``floats`` temporaries each fit ``_CHUNK_BYTES``
    (all of them off the CPU)."""
    if dy.device.type != "cpu":
        return dy.shape[0]
    return max(1, _CHUNK_BYTES // max(1, floats * dy.element_size()))


def _per_sample_conv_grad_unfold(conv, x, dy):
    """Per-sample weight gradients of a ``Conv2d`` from unfolded patches.

    Faster than the grouped call for few input channels per group, where
    the grouped weight-gradient kernels of oneDNN are slow. On the CPU the
    patches are built for chunks of samples (see ``_by_samples``).
    """
    patches = conv.weight[0].numel() * dy[0, 0].numel()  # floats of a sample

    def grads(calls):
        ((x, dy),) = calls
        n, g = x.shape[0], conv.groups
        u = _unfold(conv, x)
        u = u.reshape(n, g, u.shape[1] // g, u.shape[2])
        d = dy.reshape(n, g, dy.shape[1] // g, -1)
        return (torch.matmul(d, u.transpose(-1, -2)).reshape(n, -1),)

    return _by_samples(grads, [(x, dy)], patches)[0]


def _per_sample_conv_grad(conv, x, dy):
    """Per-sample weight gradients, shape (n, weight.numel()).

    The batch is folded into the channels of a single sample and the
    convolution's groups multiplied by ``n``: the weight gradient of that
    grouped convolution holds one block per sample.
    """
    n = x.shape[0]
    padding = conv.padding
    if isinstance(padding, str) or conv.padding_mode != "zeros":
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
        padding = (0,) * (x.dim() - 2)
    weight = conv.weight.detach().repeat(n, *([1] * (conv.weight.dim() - 1)))
    grad = torch.ops.aten.convolution_backward(
        dy.reshape(1, -1, *dy.shape[2:]),
        x.reshape(1, -1, *x.shape[2:]),
        weight,
        None,
        list(conv.stride),
        list(padding),
        list(conv.dilation),
        False,
        [0] * (x.dim() - 2),
        conv.groups * n,
        [False, True, False],
    )[1]
    return grad.reshape(n, -1)


def _cat(parts):
    """Concatenate the calls of a shared layer along the positions."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _ghost_norm(u, dy):
    """Σ over positions pairs of (u uᵀ) ⊙ (dy dyᵀ): ‖dyᵀ u‖² per sample."""
    return (torch.bmm(u, u.transpose(1, 2)) * torch.bmm(dy, dy.transpose(1, 2))).sum(
        (1, 2)
    )


def _unfold(conv: nn.Conv2d, x):
    """Patches of a 2-d convolution's input, shape (n, C * kh * kw, L).

    Same result as ``F.unfold``, built by one strided copy, which is much
    faster than ``F.unfold`` on CPU when threads are contended.
    """
    padding = conv.padding
    if isinstance(padding, str) or conv.padding_mode != "zeros":
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
    elif any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    n, c, h, w = x.shape
    (kh, kw), (dh, dw), (sh, sw) = conv.kernel_size, conv.dilation, conv.stride
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (w - dw * (kw - 1) - 1) // sw + 1
    s_n, s_c, s_h, s_w = x.stride()
    patches = x.as_strided(
        (n, c, kh, kw, ho, wo),
        (s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw),
        x.storage_offset(),
    )
    return patches.reshape(n, c * kh * kw, ho * wo)


class _BatchNormRule(_LayerRule):
    """``nn.BatchNorm{1,2,3}d`` on running statistics (eval mode).

    With ``x̂ = (x − running_mean) / √(running_var + eps)`` per channel, a
    sample's gradients of the affine weight and bias are the per-channel
    sums of ``dY·x̂`` and of ``dY``. With batch statistics the samples of a
    batch interact and per-sample gradients are undefined.
    """

    types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

    def covers(self, module):
        if not module.affine:
            return False
        if module.training or module.running_mean is None:
            raise ValueError(
                f"{type(module).__name__} normalizes with batch statistics "
                f"(training={module.training}, track_running_stats="
                f"{module.track_running_stats}), so the samples of a batch "
                "interact and per-sample gradients are undefined; call "
                "module.eval() and use BatchNorm with running statistics"
            )
        return True

    def vector_grads(self, module, calls, params):
        g_w, g_b = 0, 0
        scale = torch.rsqrt(module.running_var + module.eps)
        for inp, dy in calls:
            n, c = inp.shape[:2]
            mean = module.running_mean.reshape(1, c, *([1] * (inp.dim() - 2)))
            centred = (inp - mean).reshape(n, c, -1)
            dy = dy.reshape(n, c, -1)
            # per-sample, per-channel Σ dy·x̂ as a batched dot product
            g_w = g_w + torch.einsum("ncl,ncl->nc", dy, centred) * scale
            g_b = g_b + dy.sum(2)
        grads = (("weight", g_w), ("bias", g_b))
        return [(name, g) for name, g in grads if name in params]


# The rule table: every module that is an instance of an entry's types has
# its direct parameters handled by that entry's closed forms.
_LAYER_RULES = (_LinearRule(), _ConvRule(), _BatchNormRule())


def _rule_for(module):
    """The entry of ``_LAYER_RULES`` for ``module``, or None."""
    for rule in _LAYER_RULES:
        if isinstance(module, rule.types):
            return rule
    return None


def _supported_modules(module):
    """Modules whose direct parameters the closed forms handle."""
    out = []
    for m in module.modules():
        rule = _rule_for(m)
        if rule is not None and rule.covers(m):
            out.append(m)
    return out


def _candidates(module, named):
    """Supported modules -> {local name: (full name, parameter)}.

    Only trainable parameters held by exactly one module are included; a
    parameter shared between modules goes to the fallback.
    """
    full = {id(p): n for n, p in named}
    owners: dict[int, int] = {}
    for m in module.modules():
        for p in m._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    out = {}
    for m in _supported_modules(module):
        ps = {
            local: (full[id(p)], p)
            for local, p in m._parameters.items()
            if p is not None and id(p) in full and owners[id(p)] == 1
        }
        if ps:
            out[m] = ps
    return out


def _slice(vector, entry):
    """The slice of a parameter-space vector for one (full name, parameter)."""
    if vector is None:
        return None
    return vector.get(entry[0])


def _call(module, x):
    if isinstance(x, Mapping):
        return module(**x)
    return module(x)


def _batch_size(x):
    if isinstance(x, Mapping):
        return next(iter(x.values())).shape[0]
    return x.shape[0]


def _vmap_grads(module, x, targets, names):
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in module.named_parameters()}
    buffers = dict(module.named_buffers())
    sub = {n: params[n] for n in names}

    def loss_fn(sub_params, xi, ti):
        p = {**params, **sub_params}
        if isinstance(xi, Mapping):
            xi = {k: v.unsqueeze(0) for k, v in xi.items()}
            out = functional_call(module, (p, buffers), (), xi)
        else:
            out = functional_call(module, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(logits_of(out), ti.unsqueeze(0), reduction="sum")

    g = vmap(grad(loss_fn), in_dims=(None, 0, 0))(sub, x, targets)
    return [g[n] for n in names]


def _loop_grads(module, x, targets, params):
    n = targets.shape[0]
    out = [torch.empty((n, *p.shape), dtype=p.dtype, device=p.device) for p in params]
    for i in range(n):
        xi = (
            {k: v[i : i + 1] for k, v in x.items()}
            if isinstance(x, Mapping)
            else x[i : i + 1]
        )
        with torch.enable_grad():
            logits = logits_of(_call(module, xi))
            loss = F.cross_entropy(logits, targets[i : i + 1], reduction="sum")
            gs = torch.autograd.grad(loss, params, allow_unused=True)
        for buf, g in zip(out, gs):
            buf[i] = 0 if g is None else g
    return out


def sum_gradient(
    module: nn.Module, batches: Iterable[tuple]
) -> dict[str, torch.Tensor]:
    """Gradient of the summed cross-entropy over all batches.

    This is dynamicAL's ``G_S``: the SUM (not the mean) of the labelled
    samples' gradients, computed one batch at a time.

    Parameters
    ----------
    module : torch.nn.Module
        Use eval mode for dynamicAL (no dropout, BatchNorm running
        statistics).
    batches : iterable of (x, y)
        Inputs (tensor or dict of tensors, on the module's device) and class
        indices.

    Returns
    -------
    gradient : dict of str to torch.Tensor
        One entry per trainable parameter, keyed by its name in
        ``module.named_parameters()``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skal.gradients import sum_gradient
    >>> net = nn.Linear(3, 2)
    >>> x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    >>> g = sum_gradient(net, [(x[:4], y[:4]), (x[4:], y[4:])])
    >>> ref = torch.autograd.grad(
    ...     nn.functional.cross_entropy(net(x), y, reduction="sum"), net.bias
    ... )[0]
    >>> bool(torch.allclose(g["bias"], ref))
    True
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    total = {n: torch.zeros_like(p) for n, p in named}
    for x, y in batches:
        with torch.enable_grad():
            logits = logits_of(_call(module, x))
            loss = F.cross_entropy(logits, y.long(), reduction="sum")
            grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        for (n, _), g in zip(named, grads):
            if g is not None:
                total[n] += g
    return total
