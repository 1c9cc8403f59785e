"""dynamicAL: exactness of the per-sample statistics and the strategy."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from sklearn.datasets import load_digits
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from torch import nn

import skal
from skal import gradients
from skal.gradients import PerSampleGradients, sum_gradient
from skal.nets import MLP, ResNet18, TutorialCNN
from skal.strategies import DynamicAL, QueryContext, get_strategy_names

N_CLASSES = 10
GAMMAS = [0.0, 1.0, 2.0, math.inf]


class BNDropoutCNN(nn.Module):
    """A CNN with BatchNorm2d, BatchNorm1d and both dropout kinds."""

    def __init__(self, num_classes=N_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.3),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(32, num_classes),
        )

    def forward(self, x):
        return self.body(x)


class SharedInplace(nn.Module):
    """A layer used twice per forward, in-place ops and a token dimension."""

    def __init__(self, num_classes=N_CLASSES):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.shared = nn.Linear(8, 8)
        self.out = nn.Linear(8, num_classes)

    def forward(self, x):  # x: (n, 4 tokens, 6)
        h = torch.relu_(self.inp(x))
        h = self.shared(h)
        h += 0.5
        h = torch.tanh(self.shared(h))
        return self.out(h.mean(1))


class ConvVariants(nn.Module):
    """Grouped, reflect-padded, 'same'-padded dilated and 1-d convolutions."""

    def __init__(self, num_classes=N_CLASSES):
        super().__init__()
        self.depthwise = nn.Conv2d(3, 6, 3, padding=1, groups=3, padding_mode="reflect")
        self.same = nn.Conv2d(6, 8, 3, padding="same", dilation=2)
        self.conv1d = nn.Conv1d(8, 4, 5, stride=2)
        self.fc = nn.Linear(4 * 30, num_classes)

    def forward(self, x):
        h = torch.relu(self.same(torch.relu(self.depthwise(x))))
        return self.fc(torch.relu(self.conv1d(h.flatten(2))).flatten(1))


class Uncovered(nn.Module):
    """Parameters outside the closed forms: transposed conv, PReLU, a raw scale."""

    def __init__(self, num_classes=N_CLASSES):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.transposed = nn.ConvTranspose2d(6, 6, 3, stride=2, padding=1)
        self.act = nn.PReLU(6)
        self.scale = nn.Parameter(torch.tensor(1.3))
        self.fc = nn.Linear(6 * 16, num_classes)

    def forward(self, x):
        h = self.act(self.transposed(self.conv(x))) * self.scale
        return self.fc(F.adaptive_avg_pool2d(h, 4).flatten(1))


def _tv_resnet18():
    return torchvision.models.resnet18(num_classes=N_CLASSES)


# name -> (module factory, input shape, n candidates, n labelled)
MODELS = {
    "mlp": (lambda: MLP(N_CLASSES, (32, 16), in_features=20), (20,), 24, 12),
    "tutorial_cnn": (lambda: TutorialCNN(input_size=16), (3, 16, 16), 16, 12),
    "bn_dropout_cnn": (BNDropoutCNN, (3, 16, 16), 16, 12),
    "skal_resnet18": (ResNet18, (3, 8, 8), 6, 4),
    "tv_resnet18": (_tv_resnet18, (3, 16, 16), 6, 4),
    "shared_inplace": (SharedInplace, (4, 6), 16, 12),
    "conv_variants": (ConvVariants, (3, 8, 8), 12, 12),
    "uncovered": (Uncovered, (3, 8, 8), 12, 12),
}


def _build(name, seed=0):
    """A module with random BatchNorm statistics and affine parameters, eval."""
    factory, shape, n, n_lab = MODELS[name]
    gen = torch.Generator().manual_seed(seed)
    with skal._utils.torch_seed(seed):
        module = factory()
        module.train()
        with torch.no_grad():
            for _ in range(2):
                module(torch.randn(8, *shape, generator=gen) * 1.5 + 0.3)
            for m in module.modules():
                if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5, generator=gen)
                    m.bias.uniform_(-0.5, 0.5, generator=gen)
    module.eval()
    X = torch.randn(n, *shape, generator=gen).numpy()
    X_lab = torch.randn(n_lab, *shape, generator=gen).numpy()
    y_lab = torch.randint(0, N_CLASSES, (n_lab,), generator=gen).numpy()
    return module, X, X_lab, y_lab


def _reference(module, X, X_lab, y_lab):
    """‖g_i‖² and g_iᵀG_S by a plain per-sample autograd loop in float64."""
    m = copy.deepcopy(module).double().eval()
    params = [p for p in m.parameters() if p.requires_grad]

    def grad(x, y):
        x = torch.as_tensor(x[None], dtype=torch.float64)
        loss = F.cross_entropy(m(x), torch.as_tensor([y]))
        return torch.autograd.grad(loss, params)

    g_s = [torch.zeros_like(p) for p in params]
    for x, y in zip(X_lab, y_lab):
        g_s = [a + b for a, b in zip(g_s, grad(x, int(y)))]
    with torch.no_grad():
        labels = m(torch.as_tensor(X, dtype=torch.float64)).argmax(1).numpy()
    sq, dots = [], []
    for x, y in zip(X, labels):
        g = grad(x, int(y))
        sq.append(sum(float((a * a).sum()) for a in g))
        dots.append(sum(float((a * b).sum()) for a, b in zip(g, g_s)))
    return np.array(sq), np.array(dots), labels


def _combine(sq, dots, gamma):
    return dots if math.isinf(gamma) else sq + gamma * dots


def _context(module, X_lab, y_lab, seed=0):
    net = skal.NeuralNetClassifier(module, classes=list(range(N_CLASSES)))
    net.initialize()
    return QueryContext(
        net, np.arange(N_CLASSES), X_lab, y_lab, np.random.RandomState(seed)
    )


def _rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread is faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cached_cases(reference):
    """A function of a model name returning, built once, its module, data
    and ``reference(module, X, X_lab, y_lab)`` unpacked after them."""
    cache = {}

    def get(name):
        if name not in cache:
            module, X, X_lab, y_lab = _build(name)
            cache[name] = (module, X, X_lab, y_lab, *reference(module, X, X_lab, y_lab))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def references():
    return _cached_cases(_reference)


@pytest.mark.parametrize("name", list(MODELS))
def test_utility_matches_per_sample_loop(name, references):
    module, X, X_lab, y_lab, sq, dots, labels = references(name)
    context = _context(module, X_lab, y_lab)
    k = max(2, len(X) // 4)
    for gamma in GAMMAS:
        ref = _combine(sq, dots, gamma)
        got = DynamicAL(gamma=gamma, batch_size=5).utility(context, X)
        assert _rel_err(got, ref) <= 1e-4, (name, gamma)
        top_got, top_ref = np.argsort(-got)[:k], np.argsort(-ref)[:k]
        np.testing.assert_array_equal(top_got, top_ref)
    stats = PerSampleGradients(module).stats(torch.as_tensor(X), lambda z: z.argmax(1))
    np.testing.assert_array_equal(stats.targets.numpy(), labels)
    per_sample = np.abs(stats.sq_norms.double().numpy() - sq) / sq
    assert per_sample.max() <= 1e-4


def _route_floats(module, calls):
    """Floats per sample of a layer's closed forms' largest temporaries."""
    if isinstance(module, nn.Linear):
        return gradients._linear_route(calls, True)[1]
    return gradients._conv_route(module, calls, True)[1]


@pytest.mark.parametrize("name", list(MODELS))
def test_closed_forms_in_chunks_of_samples_give_the_same_stats(
    name, references, monkeypatch
):
    # each layer's closed forms on one sample at a time, then on three at
    # a time for the layer with the largest temporaries (as a small budget
    # splits them on the CPU): the values of one pass, and the loop's
    module, X, X_lab, y_lab, sq, dots, _ = references(name)
    x = torch.as_tensor(X)
    g_s = sum_gradient(module, [(torch.as_tensor(X_lab), torch.as_tensor(y_lab))])

    def run():
        stats = PerSampleGradients(module).stats(x, lambda z: z.argmax(1), vector=g_s)
        return stats.sq_norms.double().numpy(), stats.dots.double().numpy()

    whole = run()
    sizes = []
    for rows in ("_linear_rows", "_conv_rows"):
        original = getattr(gradients, rows)

        def counted(calls, *args, original=original, **kwargs):
            sizes.append(calls[0][1].shape[0])
            return original(calls, *args, **kwargs)

        monkeypatch.setattr(gradients, rows, counted)
    layers = PerSampleGradients(module).layer_gradients(x, lambda z: z.argmax(1))
    floats = [
        _route_floats(m, calls)
        for m, ps, calls in layers.layers
        if "weight" in ps and not isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    for budget, largest in ((1, 1), (3 * 4 * max(floats), 3)):
        sizes.clear()
        monkeypatch.setattr(gradients, "_CHUNK_BYTES", budget)
        got = run()
        assert min(sizes) >= 1 and largest in sizes and len(sizes) > len(floats)
        for value, one_pass, ref in zip(got, whole, (sq, dots)):
            assert _rel_err(value, one_pass) <= 1e-6, name
            assert _rel_err(value, ref) <= 1e-4, name


@pytest.mark.parametrize("groups", [1, 3])
def test_unfolded_conv_gradients_in_chunks(groups, monkeypatch):
    # BatchDynamicAL materializes per-sample gradients through this too:
    # chunks of three samples give each sample's autograd weight gradient
    conv = nn.Conv2d(6, 9, 3, padding=1, groups=groups)
    gen = torch.Generator().manual_seed(0)
    x, dy = (
        torch.randn(7, 6, 8, 8, generator=gen),
        torch.randn(7, 9, 8, 8, generator=gen),
    )
    expected = torch.stack(
        [
            torch.autograd.grad(
                (conv(x[i : i + 1]) * dy[i : i + 1]).sum(), conv.weight
            )[0].flatten()
            for i in range(7)
        ]
    )
    whole = gradients._per_sample_conv_grad_unfold(conv, x, dy)
    patches = conv.weight[0].numel() * 64  # floats of one sample's patches
    monkeypatch.setattr(gradients, "_CHUNK_BYTES", 3 * 4 * patches)
    sizes = []
    original = gradients._unfold

    def counted(module, inp):
        sizes.append(inp.shape[0])
        return original(module, inp)

    monkeypatch.setattr(gradients, "_unfold", counted)
    chunked = gradients._per_sample_conv_grad_unfold(conv, x, dy)
    assert sizes == [3, 3, 1]
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name",
    ["mlp", "bn_dropout_cnn", "tv_resnet18", "shared_inplace", "conv_variants"],
)
def test_closed_forms_cover_every_supported_parameter(name, references):
    module, X = references(name)[:2]
    engine = PerSampleGradients(module)
    engine.stats(torch.as_tensor(X[:2]), torch.tensor([1, 2]))
    assert engine.fallback_parameters_ == []
    if name in ("tv_resnet18", "shared_inplace"):
        assert engine._clone_outputs, "in-place ReLU / += must be detected"


@pytest.mark.parametrize("fallback", ["vmap", "loop"])
def test_fallback_handles_uncovered_parameters(fallback, references):
    module, X, X_lab, y_lab, sq, dots, _ = references("uncovered")
    engine = PerSampleGradients(module, fallback=fallback)
    x = torch.as_tensor(X)
    batches = [(torch.as_tensor(X_lab), torch.as_tensor(y_lab))]
    stats = engine.stats(x, lambda z: z.argmax(1), vector=sum_gradient(module, batches))
    assert set(engine.fallback_parameters_) == {
        "transposed.weight",
        "transposed.bias",
        "act.weight",
        "scale",
    }
    assert _rel_err(stats.sq_norms.double().numpy(), sq) <= 1e-4
    assert _rel_err(stats.dots.double().numpy(), dots) <= 1e-4


def test_sum_gradient_equals_sum_of_per_sample_gradients():
    module, _, X_lab, y_lab = _build("bn_dropout_cnn")
    x, y = torch.as_tensor(X_lab), torch.as_tensor(y_lab)
    got = sum_gradient(module, [(x[:5], y[:5]), (x[5:], y[5:])])
    for i in range(len(x)):
        loss = F.cross_entropy(module(x[i : i + 1]), y[i : i + 1])
        for (name, _), g in zip(
            module.named_parameters(), torch.autograd.grad(loss, module.parameters())
        ):
            got[name] -= g
    assert max(float(g.abs().max()) for g in got.values()) < 1e-5


def test_batchnorm_with_batch_statistics_raises():
    module = BNDropoutCNN().train()
    with pytest.raises(ValueError, match="batch statistics"):
        PerSampleGradients(module).stats(torch.randn(4, 3, 8, 8), torch.zeros(4))
    module = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)
    ).eval()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        PerSampleGradients(module).stats(torch.randn(4, 3, 8, 8), torch.zeros(4))


def test_strategy_restores_train_mode_and_leaves_weights(references):
    module, X, X_lab, y_lab, *_ = references("bn_dropout_cnn")
    module = copy.deepcopy(module).train()
    module.body[2].eval()  # a submodule with its own mode
    before = copy.deepcopy(module.state_dict())
    DynamicAL().utility(_context(module, X_lab, y_lab), X)
    assert module.training and not module.body[2].training
    assert module.body[1].training
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_sampled_pseudo_labels_are_reproducible(references):
    module, X, X_lab, y_lab, sq, *_ = references("mlp")
    sampled = [
        DynamicAL(gamma=0, pseudo_label="sample").utility(
            _context(module, X_lab, y_lab, seed=s), X
        )
        for s in (0, 0, 1)
    ]
    np.testing.assert_array_equal(sampled[0], sampled[1])
    assert not np.allclose(sampled[0], sampled[2])
    assert not np.allclose(sampled[0], sq)


@pytest.mark.parametrize(
    "params, error",
    [
        ({"gamma": -1}, ValueError),
        ({"gamma": float("nan")}, ValueError),
        ({"gamma": "2"}, TypeError),
        ({"pseudo_label": "max"}, ValueError),
        ({"batch_size": 0}, ValueError),
    ],
)
def test_invalid_parameters_raise(params, error, references):
    module, X, X_lab, y_lab, *_ = references("mlp")
    (name,) = params
    with pytest.raises(error, match=f"The '{name}' parameter of DynamicAL must be"):
        DynamicAL(**params).utility(_context(module, X_lab, y_lab), X)


def test_dynamic_al_through_learner_with_pipeline():
    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]
    to_images = FunctionTransformer(lambda a: (a / 16.0).reshape(-1, 1, 8, 8))
    net = skal.NeuralNetClassifier(skal.nets.SmallCNN, max_epochs=3, lr=5e-3)
    learner = skal.ActiveLearner(
        make_pipeline(to_images, net), strategy="dynamic_al", random_state=0
    ).fit(X[:50], y[:50])
    assert "dynamic_al" in get_strategy_names()
    pool = X[50:]
    u = learner.utility(pool)
    assert u.shape == (len(pool),) and np.isfinite(u).all()
    idx = learner.query(pool, n=10)
    np.testing.assert_array_equal(idx, np.argsort(-u, kind="stable")[:10])
    learner.teach(pool[idx], y[50:][idx])
    assert learner.n_labeled_ == 60
