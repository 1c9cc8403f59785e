"""NTK diagnostics against explicit Jacobians on tiny networks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skal.ntk import (
    approximation_ratio,
    empirical_ntk,
    ntk_alignment,
    ntk_mmd2,
    training_dynamics,
)

C = 3


def _mlp():
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, C))


def _cnn():
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(3 * 16, C),
    )
    with torch.no_grad():
        net(torch.randn(8, 1, 4, 4))  # move the running statistics
    return net


NETS = {"mlp": (_mlp, (4,)), "cnn": (_cnn, (1, 4, 4))}


@pytest.fixture(params=list(NETS))
def setup(request):
    factory, shape = NETS[request.param]
    torch.manual_seed(0)
    net = factory().double().train()
    X = torch.randn(7, *shape, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    return net, X, y


def _jacobian(net, X):
    """J[i, c] = ∂f_c(x_i)/∂θ by one backward pass per sample and class."""
    params = [p for p in net.parameters() if p.requires_grad]
    net.eval()
    rows = []
    for x in X:
        out = net(x[None])[0]
        rows.append(
            [
                torch.cat(
                    [
                        g.flatten()
                        for g in torch.autograd.grad(out[c], params, retain_graph=True)
                    ]
                )
                for c in range(C)
            ]
        )
    net.train()
    return torch.stack([torch.stack(r) for r in rows]).numpy()


def _dynamics(net, X, y, J):
    """G(S) = Σ_ij d_iᵀ Θ_ij d_j from the explicit kernel."""
    net.eval()
    with torch.no_grad():
        d = (net(X).softmax(1) - F.one_hot(y, C)).numpy()
    net.train()
    theta = np.einsum("iap,jbp->ijab", J, J)
    return float(np.einsum("ia,ijab,jb->", d, theta, d))


def test_empirical_ntk_is_jacobian_product(setup):
    net, X, _ = setup
    J = _jacobian(net, X)
    np.testing.assert_allclose(
        empirical_ntk(net, X, batch_size=3),
        np.einsum("iap,jbp->ijab", J, J),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        empirical_ntk(net, X[:2], X[2:]),
        np.einsum("iap,jbp->ijab", J[:2], J[2:]),
        rtol=1e-10,
    )
    assert net.training  # mode restored


def test_alignment(setup):
    net, X, y = setup
    J = _jacobian(net, X)
    Y = np.eye(C)[y.numpy()]
    explicit = sum(
        Y[i] @ J[i] @ J[j].T @ Y[j] for i in range(len(X)) for j in range(len(X))
    )
    theta = empirical_ntk(net, X)
    assert ntk_alignment(theta, y.numpy()) == pytest.approx(explicit, rel=1e-10)
    assert ntk_alignment(theta, Y) == pytest.approx(explicit, rel=1e-10)
    K = np.trace(theta, axis1=2, axis2=3)
    assert ntk_alignment(K, y.numpy()) == pytest.approx(np.trace(Y.T @ K @ Y))
    with pytest.raises(ValueError, match="ntk must have shape"):
        ntk_alignment(np.zeros((2, 2, 2)), [0, 1])


def test_training_dynamics(setup):
    net, X, y = setup
    J = _jacobian(net, X)
    assert training_dynamics(net, X, y, batch_size=3) == pytest.approx(
        _dynamics(net, X, y, J), rel=1e-10
    )
    net.eval()
    with torch.no_grad():
        r = (net(X) - F.one_hot(y, C)).numpy()
    net.train()
    explicit = np.einsum("ia,iap,jbp,jb->", r, J, J, r)
    assert training_dynamics(net, X, y, loss="squared_error") == pytest.approx(
        explicit, rel=1e-10
    )
    with pytest.raises(ValueError, match="loss"):
        training_dynamics(net, X, y, loss="hinge")


def test_approximation_ratio_against_explicit_dynamics(setup):
    net, X, y = setup
    S, y_s, Q = X[:4], y[:4], X[4:]
    net.eval()
    with torch.no_grad():
        y_q = net(Q).argmax(1)
    net.train()

    def G(Xs, ys):
        return _dynamics(net, Xs, ys, _jacobian(net, Xs))

    g_s = G(S, y_s)
    joint = G(torch.cat([S, Q]), torch.cat([y_s, y_q])) - g_s
    singles = sum(
        G(torch.cat([S, Q[u : u + 1]]), torch.cat([y_s, y_q[u : u + 1]])) - g_s
        for u in range(len(Q))
    )
    got = approximation_ratio(net, S.numpy(), y_s.numpy(), Q, batch_size=2)
    assert got == pytest.approx(singles / joint, rel=1e-8)
    assert net.training


def test_ntk_mmd2_unbiased_estimator(setup):
    net, X, _ = setup
    Z = X[:4] + 0.5
    J = _jacobian(net, torch.cat([X, Z])).reshape(len(X) + len(Z), -1)
    K = J @ J.T
    m, n = len(X), len(Z)
    kxx, kzz, kxz = K[:m, :m], K[m:, m:], K[:m, m:]
    explicit = (
        sum(kxx[i, j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        + sum(kzz[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        - 2 * kxz.mean()
    )
    assert ntk_mmd2(net, X, Z, batch_size=3) == pytest.approx(explicit, rel=1e-8)
    with pytest.raises(ValueError, match="at least 2"):
        ntk_mmd2(net, X[:1], Z)
