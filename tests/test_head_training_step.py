"""What one training step of the head nets computes, against plain torch code."""

import gc
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import skal
from skal.nets import AuxiliaryHead, LayerTap, TutorialCNN, global_average_pool

TAPS = ["conv1", "conv2", "fc1", "fc2"]


# a fixed seed, the global RNG state restored (conftest.py: one thread)
pytestmark = pytest.mark.usefixtures("seeded")


# ------------------------------------------------- global average pooling
def _maps():
    x = 3 * torch.randn(5, 6, 7, 9, dtype=torch.float64) + 1
    return {
        "contiguous": x.float(),
        "float64": x,
        "channels_last": x.float().contiguous(memory_format=torch.channels_last),
        "transposed": x.float().transpose(2, 3),
        "3d": x[:, :, :, 0].float(),
        "5d": x.float().reshape(5, 6, 7, 3, 3),
        "bfloat16": x.to(torch.bfloat16),
    }


@pytest.mark.parametrize("name", list(_maps()))
def test_global_average_pool_equals_torch_mean_with_its_gradient(name):
    x = _maps()[name].requires_grad_()
    expected = x.flatten(2).mean(dim=2)
    pooled = global_average_pool(x)
    assert torch.equal(pooled, expected)  # bit for bit
    grad = torch.randn_like(expected)
    (want,) = torch.autograd.grad(expected, x, grad)
    (got,) = torch.autograd.grad(pooled, x, grad)
    assert torch.equal(got, want)


def test_global_average_pool_gradient_is_a_broadcast_view():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(global_average_pool(x), x, torch.ones(4, 3))
    # one value per (sample, channel), not a materialized 4 x 3 x 8 x 8 map
    assert grad.stride()[2:] == (0, 0)
    assert torch.equal(grad, torch.full_like(x, 1 / 64))


def test_global_average_pool_rejects_vectors():
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        global_average_pool(torch.zeros(3))


# ----------------------------------------------------- LayerTap transform
def test_layer_tap_transform_keeps_only_its_result():
    net = TutorialCNN()
    seen = {}

    def keep_a_weak_reference(module, inputs, output):
        seen["map"] = weakref.ref(output)

    handle = net.conv1.register_forward_hook(keep_a_weak_reference)
    try:
        x = torch.randn(2, 3, 32, 32)
        tap = LayerTap(net, ["conv1"], detach=False, transform=global_average_pool)
        with tap:
            net(x)
        gc.collect()
        assert seen["map"]() is None  # the map was freed with the forward pass
        torch.testing.assert_close(tap.features["conv1"], net.conv1(x).mean(dim=(2, 3)))
        tap.features["conv1"].sum().backward()  # the graph reaches the layer
        assert net.conv1.weight.grad is not None

        with LayerTap(net, ["conv1"], detach=False) as tap:
            net(x)
        gc.collect()
        assert seen["map"]() is tap.features["conv1"]  # kept without a transform
    finally:
        handle.remove()


def test_layer_tap_transform_runs_after_detaching():
    net = TutorialCNN()
    calls = []

    def transform(value):
        calls.append(value.requires_grad)
        return value.sum(dim=1)

    with LayerTap(net, ["fc1"], transform=transform) as tap:
        net(torch.randn(2, 3, 32, 32))
    assert calls == [False]
    assert tap.features["fc1"].shape == (2,)


def test_layer_tap_transform_must_be_callable():
    message = "transform must be a callable or None, got str"
    with pytest.raises(TypeError, match=message):
        LayerTap(TutorialCNN(), ["fc1"], transform="mean")


# --------------------------------------- a TiDAL fit against plain torch
class _CNN64(TutorialCNN):
    """The tutorial CNN in float64 (the net's batches arrive as float32)."""

    def __init__(self, in_channels=3, num_classes=10, input_size=32):
        super().__init__(in_channels, num_classes, input_size)
        self.double()

    def forward(self, x):
        return super().forward(x.double())


def _reference_tidal_fit(module, head, X, y, *, batch_size, epochs, lam):
    """TiDAL's training in plain torch: unshuffled batches, Adam(lr=1e-3).

    The running mean of the predicted probabilities is kept in float32 and
    the KL term computed in float32, as the net does; everything else runs
    in the modules' float64.
    """
    feats = {}

    def tap(name):
        def hook(mod, inputs, output):
            feats[name] = output

        return hook

    handles = [getattr(module, n).register_forward_hook(tap(n)) for n in TAPS]
    params = list(module.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    n, n_classes = len(X), head.output.out_features
    mean = torch.zeros(n, n_classes)
    count = torch.zeros(n)
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(epochs):
        for start in range(0, n, batch_size):
            rows = torch.arange(start, min(start + batch_size, n))
            optimizer.zero_grad()
            logits = module(X[rows])
            pooled = [
                feats[n].mean(dim=(2, 3)) if feats[n].ndim == 4 else feats[n]
                for n in TAPS
            ]
            hidden = [torch.relu(p(f)) for p, f in zip(head.projections, pooled)]
            out = head.output(torch.cat(hidden, dim=1))
            proba = torch.softmax(logits.detach().float(), dim=1)
            seen = count[rows]
            mean[rows] = (mean[rows] * seen[:, None] + proba) / (seen + 1)[:, None]
            count[rows] = seen + 1
            target = mean[rows]
            log_q = torch.log_softmax(out.float(), dim=1)
            kl = (target * (target.log() - log_q)).sum(1)
            loss = F.cross_entropy(logits, y[rows]) + lam * kl.mean()
            loss.backward()
            optimizer.step()
    for h in handles:
        h.remove()
    return mean.double().numpy()


def test_tidal_fit_matches_a_plain_torch_reference():
    # In float64. Two float32 runs that order their operations differently
    # (another kernel, another memory alignment of a batch) drift apart
    # within a few Adam steps: 5e-4 relative after 9 steps on a CPU with
    # AMX, i.e. ~4,000 float32 epsilons. The same growth from float64's
    # epsilon (1.1e-16) stays below 1e-12, so rtol=1e-9 holds on every
    # kernel set, while a wrong target, weight or row moves values by
    # more than 1e-4.
    rng = np.random.RandomState(0)
    X = rng.randn(40, 3, 32, 32).astype(np.float32)
    y = rng.randint(3, size=40)
    net = skal.TiDALClassifier(
        _CNN64,
        tidal_layers=TAPS,
        tidal_lambda=0.7,
        tidal_module__in_channels=[6, 16, 120, 84],
        classes=[0, 1, 2],
        batch_size=16,  # a last batch of 8
        max_epochs=3,
        iterator_train__shuffle=False,
    ).initialize()
    net.tidal_module_.double()
    module = _CNN64(num_classes=3)
    module.load_state_dict(net.module_.state_dict())
    head = AuxiliaryHead(4, out_features=3, in_channels=[6, 16, 120, 84]).double()
    head.load_state_dict(net.tidal_module_.state_dict())

    net.partial_fit(X, y)
    dynamics = _reference_tidal_fit(
        module, head, X, y, batch_size=16, epochs=3, lam=0.7
    )

    # the means are float32: a few units in their last place
    np.testing.assert_allclose(net.dynamics_, dynamics, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(net.dynamics_counts_, 3)
    for ours, ref in [(net.module_, module), (net.tidal_module_, head)]:
        for (name, a), (_, b) in zip(
            ours.state_dict().items(), ref.state_dict().items(), strict=True
        ):
            assert a.dtype == torch.float64, name
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
    assert isinstance(net.tidal_module_.output, nn.Linear)
