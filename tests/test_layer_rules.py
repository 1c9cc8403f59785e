"""Every entry of the per-layer rule table against plain autograd.

One network per case holds a single layer of the rule's type (called once or
twice, shared weights), so every trainable parameter is the rule's. Both
consumers of the table are checked: ``PerSampleGradients`` (squared norms,
inner products with a vector) and ``PairwiseGradients`` (pairwise gradient
inner products), and the rule's primitives (per-sample weight gradients,
factors, rank-one sketch) against the per-sample weight gradients.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skal import gradients
from skal.gradients import PerSampleGradients
from skal.pairwise import PairwiseGradients

N = 5


class _OneLayer(nn.Module):
    """``layer`` on the input (and, if ``twice``, on a shifted copy), flattened
    and summed: the logits."""

    def __init__(self, layer, twice):
        super().__init__()
        self.layer = layer
        self.twice = twice

    def forward(self, x):
        out = self.layer(x).flatten(1)
        if self.twice:
            out = out + self.layer(0.5 * x - 0.2).flatten(1)
        return out


# id -> (rule class, layer factory, input shape of one sample, called twice)
CASES = {
    "linear_one_position": (gradients._LinearRule, lambda: nn.Linear(5, 3), (5,), 0),
    "linear_tokens": (gradients._LinearRule, lambda: nn.Linear(3, 4), (6, 3), 0),
    "linear_few_tokens": (gradients._LinearRule, lambda: nn.Linear(12, 10), (2, 12), 0),
    "linear_shared_no_bias": (
        gradients._LinearRule,
        lambda: nn.Linear(4, 3, bias=False),
        (4,),
        1,
    ),
    "conv2d_few_channels": (
        gradients._ConvRule,
        lambda: nn.Conv2d(2, 3, 3, padding=1),
        (2, 5, 5),
        0,
    ),
    "conv2d_one_position": (
        gradients._ConvRule,
        lambda: nn.Conv2d(36, 4, 3),
        (36, 3, 3),
        0,
    ),
    "conv2d_groups_reflect_shared": (
        gradients._ConvRule,
        lambda: nn.Conv2d(4, 6, 3, groups=2, padding=1, padding_mode="reflect"),
        (4, 5, 5),
        1,
    ),
    "conv2d_many_channels": (
        gradients._ConvRule,
        lambda: nn.Conv2d(40, 3, 3, stride=2, bias=False),
        (40, 7, 7),
        0,
    ),
    "conv1d_same": (
        gradients._ConvRule,
        lambda: nn.Conv1d(3, 4, 3, padding="same"),
        (3, 7),
        0,
    ),
    "conv3d": (gradients._ConvRule, lambda: nn.Conv3d(2, 3, 2), (2, 3, 3, 3), 0),
    "batchnorm1d_flat": (gradients._BatchNormRule, lambda: nn.BatchNorm1d(4), (4,), 0),
    "batchnorm1d_sequence_shared": (
        gradients._BatchNormRule,
        lambda: nn.BatchNorm1d(3),
        (3, 5),
        1,
    ),
    "batchnorm2d": (gradients._BatchNormRule, lambda: nn.BatchNorm2d(2), (2, 3, 3), 0),
    "batchnorm3d": (
        gradients._BatchNormRule,
        lambda: nn.BatchNorm3d(2),
        (2, 2, 2, 2),
        0,
    ),
}


def _case(name):
    """The eval-mode network, a batch, labels and a parameter-space vector."""
    rule, factory, shape, twice = CASES[name]
    gen = torch.Generator().manual_seed(sorted(CASES).index(name))
    torch.manual_seed(0)
    net = _OneLayer(factory(), bool(twice))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        layer = net.layer
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=gen))
            layer.running_var.uniform_(0.5, 2.0, generator=gen)
    net.eval()
    x = torch.randn(N, *shape, generator=gen)
    n_classes = net(x).shape[1]
    y = torch.randint(0, n_classes, (N,), generator=gen)
    vector = {
        name: torch.randn(p.shape, generator=gen) for name, p in net.named_parameters()
    }
    return net, x, y, vector


def _autograd(net, x, y, vector):
    """Per-sample gradients (n, P) over all parameters, by a float64 loop,
    and their inner products with ``vector``."""
    net = copy.deepcopy(net).double()
    names = [n for n, _ in net.named_parameters()]
    rows = []
    for i in range(N):
        loss = F.cross_entropy(net(x[i : i + 1].double()), y[i : i + 1])
        grads = torch.autograd.grad(loss, list(net.parameters()))
        rows.append(torch.cat([g.flatten() for g in grads]))
    g = torch.stack(rows)
    v = torch.cat([vector[n].double().flatten() for n in names])
    return g, g @ v


def _close(got, ref):
    err = (got.double() - ref).abs().max() / ref.abs().max()
    assert float(err) <= 1e-4, float(err)


def test_every_rule_has_cases_and_every_case_resolves_to_its_rule():
    assert {type(rule) for rule in gradients._LAYER_RULES} == {
        case[0] for case in CASES.values()
    }
    for name, (rule, factory, _, _) in CASES.items():
        assert type(gradients._rule_for(factory())) is rule, name


@pytest.mark.parametrize("name", list(CASES))
def test_per_sample_statistics_match_autograd(name):
    net, x, y, vector = _case(name)
    g, dots = _autograd(net, x, y, vector)
    engine = PerSampleGradients(net)
    stats = engine.stats(x, y, vector=vector)
    assert engine.fallback_parameters_ == []
    _close(stats.sq_norms, (g * g).sum(1))
    _close(stats.dots, dots)
    # inner products alone take other routes (no per-sample gradient)
    _close(engine.stats(x, y, vector=vector, norms=False).dots, dots)


@pytest.mark.parametrize("name", list(CASES))
def test_pairwise_inner_products_match_autograd(name):
    net, x, y, vector = _case(name)
    g, dots = _autograd(net, x, y, vector)
    feats = PairwiseGradients(net).features(x, y, vector=vector)
    _close(feats.gram(), g @ g.T)
    _close(feats.sq_norms, (g * g).sum(1))
    _close(feats.dots, dots)


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[0].has_matrix])
def test_weight_primitives_match_autograd(name):
    # the materialized gradients, the factors and the rank-one sketch of the
    # weight, each against the autograd weight gradients G (n, M, K)
    net, x, y, _ = _case(name)
    layer = net.layer
    rule = gradients._rule_for(layer)
    calls = PerSampleGradients(net).layer_gradients(x, y).layers[0][2]
    weight = torch.stack(
        [
            torch.autograd.grad(
                F.cross_entropy(net(x[i : i + 1]), y[i : i + 1], reduction="sum"),
                layer.weight,
            )[0]
            for i in range(N)
        ]
    ).reshape(N, layer.weight.shape[0], -1)
    k_in, m_out, _ = rule.dims(layer, calls)
    assert weight.shape[1:] == (m_out, k_in)
    torch.testing.assert_close(
        rule.weight_grads(layer, calls), weight.flatten(1), rtol=1e-4, atol=1e-5
    )
    if rule.factorable(layer):
        u, dy = rule.factors(layer, calls)
        torch.testing.assert_close(dy.transpose(1, 2) @ u, weight, rtol=1e-4, atol=1e-5)
    if rule.sketchable(layer):
        gen = torch.Generator().manual_seed(1)
        a, b = torch.randn(m_out, 7, generator=gen), torch.randn(k_in, 7, generator=gen)
        expected = torch.einsum("mj,nmk,kj->nj", a, weight, b)
        torch.testing.assert_close(
            rule.sketch(layer, calls, a, b), expected, rtol=1e-4, atol=1e-4
        )


def test_cases_take_every_route_of_the_closed_forms():
    # the cases above go through each way the rules compute: the norms' routes
    # of linear and convolution weights, and exact pairwise features both as
    # factors and as materialized gradients
    routes = set()
    for name in CASES:
        net, x, y, _ = _case(name)
        layers = PerSampleGradients(net).layer_gradients(x, y).layers
        for m, ps, calls in layers:
            rule = gradients._rule_for(m)
            if not (rule.has_matrix and "weight" in ps):
                continue
            if isinstance(m, nn.Linear):
                routes.add(("linear", gradients._linear_route(calls, True)[0]))
            else:
                routes.add(("conv", gradients._conv_route(m, calls, True)[0]))
            route = PairwiseGradients(net)._weight_route(rule, m, calls)
            routes.add(("pairwise", route))
    assert routes == {
        ("linear", "outer"),
        ("linear", "ghost"),
        ("linear", "materialized"),
        ("conv", "ghost"),
        ("conv", "unfold"),
        ("conv", "grouped"),
        ("pairwise", "factored"),
        ("pairwise", "materialized"),
    }
