"""Neural-tangent-kernel diagnostics of the dynamicAL paper.

The empirical NTK of a classifier ``f(x; θ)`` with ``C`` logits is the
``C × C`` matrix ``Θ(x, x') = J(x) J(x')ᵀ`` with ``J(x) = ∂f(x)/∂θ`` over all
trainable parameters. dynamicAL measures:

- the alignment ``A(X, Y) = vec(Y)ᵀ Θ vec(Y)`` of the kernel with the
  one-hot labels (``Tr[Yᵀ Θ Y]`` for a kernel that is the identity across
  classes);
- the training dynamics ``G(S) = Σ_ij d_iᵀ Θ(x_i, x_j) d_j`` with
  ``d = σ(f) − y`` for the cross-entropy (``f − y`` for the squared error).
  Since ``Σ_i J_iᵀ d_i`` is the gradient of the summed loss, ``G(S)`` is the
  squared norm of that gradient and needs no kernel matrix;
- the approximation ratio ``R(Q|S) = Σ_u Δ({u}|S) / Δ(Q|S)`` of the
  per-sample relaxation (paper eq. 14), with ``Δ(Q|S) = G(S ∪ Q) − G(S)``;
- the unbiased MMD² between two sets of inputs under the NTK, used by the
  paper to compare the initial and the current labelled set.

Functions take a torch module (evaluated in eval mode, its state restored
afterwards) and inputs as arrays or tensors; kernel matrices are explicit,
so :func:`empirical_ntk` and :func:`ntk_mmd2` are meant for small sets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skorch.utils import to_numpy
from torch import nn

from ._utils import argmax_labels, eval_mode, logits_of
from .gradients import PerSampleGradients, sum_gradient


def empirical_ntk(module: nn.Module, X, X2=None, *, batch_size: int = 32):
    """The empirical NTK ``Θ[i, j] = J(x_i) J(x2_j)ᵀ``, explicitly.

    Parameters
    ----------
    module : torch.nn.Module
        Returns logits (or a tuple whose first element is the logits).
    X : array-like or tensor of shape (n, ...)
    X2 : array-like or tensor of shape (n2, ...) or None, default=None
        None means ``X``.
    batch_size : int, default=32
        Samples per Jacobian computation.

    Returns
    -------
    ntk : ndarray of shape (n, n2, n_classes, n_classes)

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skal.ntk import empirical_ntk
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    >>> ntk = empirical_ntk(net, torch.randn(4, 3))
    >>> ntk.shape
    (4, 4, 2, 2)
    >>> bool((ntk.transpose(1, 0, 3, 2) == ntk).all())
    True
    """
    with eval_mode(module):
        j1 = _jacobian(module, X, batch_size)
        j2 = j1 if X2 is None else _jacobian(module, X2, batch_size)
        ntk = torch.einsum("iap,jbp->ijab", j1, j2)
    return ntk.double().cpu().numpy()


def ntk_alignment(ntk, Y) -> float:
    """Kernel-label alignment ``A(X, Y) = vec(Y)ᵀ Θ vec(Y)``.

    Parameters
    ----------
    ntk : ndarray of shape (n, n, n_classes, n_classes) or (n, n)
        A matrix-valued NTK from :func:`empirical_ntk`, or a scalar kernel
        matrix (then ``Tr[Yᵀ Θ Y]``).
    Y : array-like of shape (n, n_classes) or (n,)
        One-hot (or soft) labels, or class indices.

    Returns
    -------
    alignment : float

    Examples
    --------
    >>> import numpy as np
    >>> from skal.ntk import ntk_alignment
    >>> ntk_alignment(np.eye(3), [0, 1, 1])
    3.0
    """
    ntk = np.asarray(ntk, dtype=np.float64)
    n_classes = ntk.shape[2] if ntk.ndim == 4 else None
    Y = _one_hot(Y, n_classes)
    if ntk.ndim == 2:
        return float(np.trace(Y.T @ ntk @ Y))
    if ntk.ndim != 4:
        raise ValueError(f"ntk must have shape (n, n) or (n, n, C, C), got {ntk.shape}")
    return float(np.einsum("ia,ijab,jb->", Y, ntk, Y))


def training_dynamics(module: nn.Module, X, y, *, loss="cross_entropy", batch_size=128):
    """dynamicAL's training dynamics ``G(S) = Σ_ij d_iᵀ Θ(x_i, x_j) d_j``.

    Computed as the squared norm of the gradient of the summed loss (no
    kernel matrix), batch by batch.

    Parameters
    ----------
    module : torch.nn.Module
    X : array-like or tensor of shape (n, ...)
    y : array-like of shape (n,)
        Class indices.
    loss : {"cross_entropy", "squared_error"}, default="cross_entropy"
        ``d = softmax(f) − onehot(y)``, or ``d = f − onehot(y)`` (G_MSE).
    batch_size : int, default=128

    Returns
    -------
    dynamics : float

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skal.ntk import empirical_ntk, training_dynamics
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    >>> X, y = torch.randn(6, 3), [0, 1, 1, 0, 0, 1]
    >>> d = net(X).softmax(1) - nn.functional.one_hot(torch.tensor(y), 2)
    >>> explicit = (d.detach().numpy()[:, None, :, None]
    ...             * empirical_ntk(net, X)
    ...             * d.detach().numpy()[None, :, None, :]).sum()
    >>> bool(abs(training_dynamics(net, X, y) - explicit) < 1e-5 * explicit)
    True
    """
    if loss not in ("cross_entropy", "squared_error"):
        raise ValueError(
            f"loss must be 'cross_entropy' or 'squared_error', got {loss!r}"
        )
    params = [p for p in module.parameters() if p.requires_grad]
    x_all = _as_tensor(module, X)
    y_all = torch.as_tensor(np.asarray(y), device=x_all.device).long()
    total = [torch.zeros_like(p) for p in params]
    with eval_mode(module), torch.enable_grad():
        for start in range(0, len(x_all), batch_size):
            logits = logits_of(module(x_all[start : start + batch_size]))
            yb = y_all[start : start + batch_size]
            if loss == "cross_entropy":
                value = F.cross_entropy(logits, yb, reduction="sum")
            else:
                target = F.one_hot(yb, logits.shape[1]).to(logits.dtype)
                value = 0.5 * (logits - target).pow(2).sum()
            for acc, g in zip(total, torch.autograd.grad(value, params)):
                acc += g
    return float(sum(g.double().pow(2).sum() for g in total))


def approximation_ratio(
    module: nn.Module, X_labeled, y_labeled, X_query, *, batch_size=128
) -> float:
    """``R(Q|S) = Σ_{u∈Q} Δ({u}|S) / Δ(Q|S)`` (dynamicAL, eq. 14).

    ``Δ(Q|S) = G(S ∪ Q) − G(S)`` with pseudo-labels (argmax) for ``Q``:
    with ``G_S`` and ``G_Q`` the summed gradients,
    ``Δ(Q|S) = ‖G_Q‖² + 2 G_Qᵀ G_S``, which adds to the per-sample terms
    ``Δ({u}|S) = ‖g_u‖² + 2 g_uᵀ G_S`` the pairwise products ``g_uᵀ g_u'``
    inside ``Q``. A ratio near 1 means the per-sample relaxation that
    dynamicAL ranks by is accurate.

    Parameters
    ----------
    module : torch.nn.Module
    X_labeled : array-like or tensor of shape (n_labeled, ...)
    y_labeled : array-like of shape (n_labeled,)
        Class indices.
    X_query : array-like or tensor of shape (n_query, ...)
    batch_size : int, default=128

    Returns
    -------
    ratio : float

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skal.ntk import approximation_ratio
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    >>> X = torch.randn(8, 3)
    >>> r = approximation_ratio(net, X[:5], [0, 1, 1, 0, 1], X[5:])
    >>> r > 0
    True
    """
    x_s = _as_tensor(module, X_labeled)
    y_s = torch.as_tensor(np.asarray(y_labeled), device=x_s.device).long()
    x_q = _as_tensor(module, X_query)
    with eval_mode(module):
        g_s = sum_gradient(module, _chunks(x_s, y_s, batch_size))
        engine = PerSampleGradients(module)
        singles = 0.0
        labels = []
        for start in range(0, len(x_q), batch_size):
            stats = engine.stats(
                x_q[start : start + batch_size], argmax_labels, vector=g_s
            )
            singles += float((stats.sq_norms + 2 * stats.dots).double().sum())
            labels.append(stats.targets)
        g_q = sum_gradient(module, _chunks(x_q, torch.cat(labels), batch_size))
    joint = sum(
        float(g_q[n].double().pow(2).sum() + 2 * (g_q[n].double() * g_s[n]).sum())
        for n in g_q
    )
    return singles / joint


def ntk_mmd2(module: nn.Module, X, Z, *, batch_size: int = 32) -> float:
    """Unbiased MMD² between two input sets under the empirical NTK.

    The scalar kernel is the trace of the ``C × C`` NTK block,
    ``k(x, x') = Tr Θ(x, x') = Σ_c ∇f_c(x)ᵀ∇f_c(x')``, and the estimator is
    the unbiased U-statistic of Gretton et al. (2012)::

        1/(m(m-1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n-1)) Σ_{i≠j} k(z_i, z_j)
        - 2/(mn) Σ_{i,j} k(x_i, z_j)

    (it can be slightly negative). The dynamicAL paper (appendix D.1)
    uses it between the initial and the current labelled set.

    Parameters
    ----------
    module : torch.nn.Module
    X : array-like or tensor of shape (m, ...), m >= 2
    Z : array-like or tensor of shape (n, ...), n >= 2
    batch_size : int, default=32

    Returns
    -------
    mmd2 : float

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skal.ntk import ntk_mmd2
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    >>> near = ntk_mmd2(net, torch.randn(20, 3), torch.randn(20, 3))
    >>> far = ntk_mmd2(net, torch.randn(20, 3), torch.randn(20, 3) + 3)
    >>> far > near
    True
    """
    with eval_mode(module):
        jx = _jacobian(module, X, batch_size).double()
        jz = _jacobian(module, Z, batch_size).double()
    # Tr Θ(x, x') = Σ_c J_c(x)·J_c(x'): an inner product of flattened Jacobians
    jx, jz = jx.flatten(1), jz.flatten(1)
    kxx, kzz, kxz = (to_numpy(a @ b.T) for a, b in ((jx, jx), (jz, jz), (jx, jz)))
    m, n = len(kxx), len(kzz)
    if m < 2 or n < 2:
        raise ValueError(
            f"X and Z need at least 2 samples each, got {m} and {n} samples"
        )
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    zz = (kzz.sum() - np.trace(kzz)) / (n * (n - 1))
    return float(xx + zz - 2 * kxz.mean())


# ------------------------------------------------------------------ helpers
def _jacobian(module, X, batch_size):
    """J of shape (n, C, P): logits w.r.t. all trainable parameters."""
    from torch.func import functional_call, jacrev, vmap

    x_all = _as_tensor(module, X)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in module.named_parameters()}
    buffers = dict(module.named_buffers())

    def logits(sub, xi):
        out = functional_call(module, ({**params, **sub}, buffers), (xi[None],))
        return logits_of(out)[0]

    sub = {n: params[n] for n in names}
    parts = []
    for start in range(0, len(x_all), batch_size):
        jac = vmap(jacrev(logits), in_dims=(None, 0))(
            sub, x_all[start : start + batch_size]
        )
        parts.append(torch.cat([jac[n].flatten(2) for n in names], dim=2))
    return torch.cat(parts)


def _as_tensor(module, X):
    p = next(module.parameters())
    return torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X).to(
        device=p.device, dtype=p.dtype
    )


def _chunks(x, y, batch_size):
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


def _one_hot(Y, n_classes):
    Y = np.asarray(Y)
    if Y.ndim == 1:
        k = n_classes if n_classes is not None else int(Y.max()) + 1
        return np.eye(k)[Y.astype(int)]
    return Y.astype(np.float64)
