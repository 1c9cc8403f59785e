"""The net's one evaluation loop: every inference iterator is a per-batch
step run by it, so they all share its modes, grad handling, batches and
progress counting, and all run the module through ``evaluation_step``."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import skal
from skal._progress import observe_inference_batches

N, BATCH = 40, 16  # 3 inference batches: 16, 16, 8


class Tiny(nn.Module):
    """Linear, BatchNorm, ReLU, Dropout, Linear; raises on forward call
    number ``fail_at`` (counted from when it is set)."""

    def __init__(self, num_classes=2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5)
        )
        self.out = nn.Linear(8, num_classes)
        self.fail_at = None
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("forward failed")
        return self.out(self.body(x))


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(N, 4).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int)


def _net(cls=skal.NeuralNetClassifier, **kwargs):
    return cls(
        Tiny,
        classes=[0, 1],
        max_epochs=1,
        batch_size=8,
        inference_batch_size=BATCH,
        **kwargs,
    )


@pytest.fixture(scope="module")
def fitted(data):
    torch.manual_seed(0)
    return _net().fit(*data)


@pytest.fixture(scope="module")
def tidal(data):
    torch.manual_seed(0)
    return _net(skal.TiDALClassifier, tidal_layers=["body.2"]).fit(*data)


def _dropout(net):
    return net.module_.body[3]


ITERATORS = {
    "forward_iter": lambda net, X: net.forward_iter(X),
    "iter_proba": lambda net, X: net.iter_proba(X),
    "iter_features": lambda net, X: net.iter_features(X, ["body.0"], embedding=True),
    "iter_logits": lambda net, X: net.iter_logits(X, 2, [_dropout(net)]),
    "iter_batches": lambda net, X: net.iter_batches(X),
}
# the iterators that run the module (iter_batches yields its inputs)
FORWARD = ["forward_iter", "iter_proba", "iter_features", "iter_logits"]
# the iterators that put every mode back after each batch; the others leave
# the net in eval mode, as skorch's prediction does
RESTORING = ["iter_logits", "iter_batches"]


def _iterate(name, net, X):
    if name == "iter_head_outputs":
        return net.iter_head_outputs(X)
    return ITERATORS[name](net, X)


def _modes(net):
    """Every module's train/eval flag, over all of the net's components."""
    return {
        (component, name): m.training
        for component in ("module_", "criterion_", "tidal_module_")
        if hasattr(net, component)
        for name, m in getattr(net, component).named_modules()
    }


def _mixed_modes(net):
    """Training mode with one submodule in eval mode: a state to restore."""
    for component in ("module_", "criterion_", "tidal_module_"):
        if hasattr(net, component):
            getattr(net, component).train()
    net.module_.body[1].eval()
    return _modes(net)


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, tuple | list):
        return [t for v in out for t in _tensors(v)]
    return []


class _Forwards:
    """Records grad mode and the modes of the module, BatchNorm and Dropout
    at each forward pass of the module, as its last layer starts."""

    def __init__(self, net):
        self.seen = []
        module = net.module_

        def hook(_module, _args):
            self.seen.append(
                (
                    torch.is_grad_enabled(),
                    module.training,
                    module.body[1].training,
                    module.body[3].training,
                )
            )

        self.handle = module.out.register_forward_pre_hook(hook)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ------------------------------------------------------- grad and modes
@pytest.mark.parametrize("name", [*ITERATORS, "iter_head_outputs"])
def test_no_graph_in_the_steps_and_the_caller_keeps_its_grad_mode(
    name, fitted, tidal, data
):
    """Each step runs without autograd; between batches the caller's grad
    mode is its own (a loop holding no_grad across its yields would turn it
    off in the caller's code)."""
    net = tidal if name == "iter_head_outputs" else fitted
    X, _ = data
    n = 0
    with _Forwards(net) as forwards:
        for out in _iterate(name, net, X):
            assert torch.is_grad_enabled()
            assert all(not t.requires_grad for t in _tensors(out))
            n += 1
    assert n == math.ceil(N / BATCH)
    assert forwards.seen or name == "iter_batches"
    assert not any(grad for grad, *_ in forwards.seen)


def test_iter_batches_inputs_let_the_caller_build_gradients(fitted, data):
    """dynamicAL differentiates the module on the yielded inputs."""
    X, y = data
    net = fitted
    module = net.module_
    grads = []
    for xb, yb in net.iter_batches(X, y):
        module.zero_grad()
        loss = nn.functional.cross_entropy(module.eval()(xb), yb)
        loss.backward()
        grads.append(module.out.weight.grad.clone())
    assert len(grads) == math.ceil(N / BATCH)
    assert all(g.abs().sum() > 0 for g in grads)


def test_forward_iter_in_training_mode_builds_the_graph(data):
    torch.manual_seed(0)
    net = _net().fit(*data)
    with _Forwards(net) as forwards:
        outs = list(net.forward_iter(data[0], training=True))
    assert all(out.requires_grad for out in outs)
    assert forwards.seen and all(f == (True, True, True, True) for f in forwards.seen)


@pytest.mark.parametrize("name", FORWARD)
def test_modes_during_each_forward(name, data):
    """Eval mode for every forward; only the modules passed to iter_logits
    are in training mode (Monte Carlo dropout)."""
    torch.manual_seed(0)
    net = _net().fit(*data)
    _mixed_modes(net)
    with _Forwards(net) as forwards:
        list(ITERATORS[name](net, data[0]))
    dropout_on = name == "iter_logits"
    assert forwards.seen
    assert all(f == (False, False, False, dropout_on) for f in forwards.seen)


@pytest.mark.parametrize("name", RESTORING)
def test_restoring_iterators_give_back_every_mode(name, data):
    """After each batch (the generator suspended, never closed), after the
    end, after the caller raises and after a forward raises mid-iteration,
    every module is in the mode it had before."""
    X, y = data
    torch.manual_seed(0)
    net = _net().fit(X, y)
    before = _mixed_modes(net)

    batches = ITERATORS[name](net, X)
    next(batches)
    assert _modes(net) == before  # suspended: nothing held across the yield
    list(batches)
    assert _modes(net) == before

    kept = ITERATORS[name](net, X)  # referenced, so never closed
    with pytest.raises(KeyError):
        for _ in kept:
            raise KeyError("the caller failed")
    assert _modes(net) == before

    if name == "iter_logits":
        net.module_.fail_at = net.module_.calls + 3  # the second batch
        with pytest.raises(RuntimeError, match="forward failed"):
            list(ITERATORS[name](net, X))
        net.module_.fail_at = None
        assert _modes(net) == before


@pytest.mark.parametrize(
    "name", [n for n in FORWARD if n not in RESTORING] + ["iter_head_outputs"]
)
def test_skorch_style_iterators_leave_the_net_in_eval_mode(name, data):
    """As skorch's prediction does: afterwards every component (module,
    criterion, auxiliary head) is in eval mode, also when a forward raised
    mid-iteration."""
    X, y = data
    torch.manual_seed(0)
    if name == "iter_head_outputs":
        net = _net(skal.TiDALClassifier, tidal_layers=["body.2"]).fit(X, y)
    else:
        net = _net().fit(X, y)
    _mixed_modes(net)
    list(_iterate(name, net, X))
    assert not any(_modes(net).values())

    _mixed_modes(net)
    net.module_.fail_at = net.module_.calls + 2  # the second batch
    with pytest.raises(RuntimeError, match="forward failed"):
        list(_iterate(name, net, X))
    net.module_.fail_at = None
    assert not any(_modes(net).values())


def test_iter_features_hooks_live_during_a_forward_only(fitted, data):
    """No tap stays on the module while the generator is suspended or after
    a forward raised, so the caller's own forward passes are not recorded."""
    X, _ = data
    layer = fitted.module_.body[0]
    features = fitted.iter_features(X, ["body.0"], embedding=True)
    next(features)
    assert not layer._forward_hooks
    assert not fitted.module_.out._forward_pre_hooks
    features.close()
    fitted.module_.fail_at = fitted.module_.calls + 1
    with pytest.raises(RuntimeError, match="forward failed"):
        next(fitted.iter_features(X, ["body.0"]))
    fitted.module_.fail_at = None
    assert not layer._forward_hooks


def test_iter_features_checks_names_before_any_batch(fitted):
    with pytest.raises(ValueError, match="no submodule named 'body.9'"):
        next(fitted.iter_features(np.empty((0, 4), np.float32), ["body.9"]))


def test_features_of_a_module_without_linear_layer():
    """Named layers are read without an embedding layer to find; only the
    embedding needs one."""
    rng = np.random.RandomState(0)
    X = rng.randn(20, 1, 6, 6).astype(np.float32)
    y = np.arange(20) % 2
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = skal.NeuralNetClassifier(module, classes=[0, 1], max_epochs=1).fit(X, y)
    feats = net.features(X, ["0"])["0"]
    with torch.no_grad():
        expected = net.module_[0].eval()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        net.embed(X)


# ------------------------------------------------------------- progress
@pytest.mark.parametrize("name", [*ITERATORS, "iter_head_outputs"])
def test_progress_counts_each_batch_once(name, fitted, tidal, data):
    """One count per batch read, whatever the step does with it (iter_logits
    runs 2 forward passes on each batch)."""
    net = tidal if name == "iter_head_outputs" else fitted
    counted = []
    with observe_inference_batches(lambda: counted.append(1)):
        n = sum(1 for _ in _iterate(name, net, data[0]))
    assert n == len(counted) == math.ceil(N / BATCH)


def test_progress_counts_batches_of_an_explicit_size(fitted, data):
    counted = []
    with observe_inference_batches(lambda: counted.append(1)):
        sizes = [len(x) for x, _ in fitted.iter_batches(data[0], batch_size=7)]
    assert sizes == [7] * 5 + [5]
    assert len(counted) == 6


# ------------------------------------------------ the one per-batch hook
class Negated(skal.NeuralNetClassifier):
    """Test-time transform through the one per-batch step: the net sees -X."""

    def evaluation_step(self, batch, training=False):
        x, y = batch
        return super().evaluation_step((-x, y), training=training)


def test_overriding_evaluation_step_changes_every_forward_pass(fitted, data):
    X, _ = data
    net = Negated(Tiny, classes=[0, 1], inference_batch_size=BATCH).initialize()
    net.module_.load_state_dict(fitted.module_.state_dict())
    np.testing.assert_allclose(net.predict_proba(X), fitted.predict_proba(-X))
    np.testing.assert_allclose(net.embed(X), fitted.embed(-X))
    ours, theirs = net.features(X, ["body.0"]), fitted.features(-X, ["body.0"])
    np.testing.assert_allclose(ours["body.0"], theirs["body.0"])
    for ours, theirs in zip(net.forward_iter(X), fitted.forward_iter(-X)):
        torch.testing.assert_close(ours, theirs)
    torch.manual_seed(3)
    mc_ours = torch.cat(list(net.iter_logits(X, 3, [_dropout(net)])), dim=1)
    torch.manual_seed(3)
    mc_theirs = torch.cat(list(fitted.iter_logits(-X, 3, [_dropout(fitted)])), dim=1)
    torch.testing.assert_close(mc_ours, mc_theirs)
    assert mc_ours.std(dim=0).max() > 0  # the dropout passes differ


class Counting(skal.TiDALClassifier):
    calls = 0

    def evaluation_step(self, batch, training=False):
        Counting.calls += 1
        return super().evaluation_step(batch, training=training)


@pytest.mark.parametrize(
    "read, passes",
    [
        (lambda net, X: net.predict_proba(X), 1),
        (lambda net, X: net.embed(X), 1),
        (lambda net, X: net.predict_dynamics(X), 1),
        (lambda net, X: list(net.iter_logits(X, 4, [_dropout(net)])), 4),
    ],
    ids=["predict_proba", "embed", "predict_dynamics", "iter_logits"],
)
def test_head_nets_run_each_forward_through_evaluation_step(read, passes, data):
    X, y = data
    torch.manual_seed(0)
    net = _net(Counting, tidal_layers=["body.2"]).fit(X, y)
    Counting.calls = 0
    read(net, X)
    assert Counting.calls == passes * math.ceil(N / BATCH)


class Bare(skal.NeuralNetClassifier):
    """A step that runs the module without skorch's grad and mode settings."""

    def evaluation_step(self, batch, training=False):
        return self.infer(batch[0])


def test_the_loop_turns_gradients_off_around_any_step(fitted, data):
    X, _ = data
    net = Bare(Tiny, classes=[0, 1], inference_batch_size=BATCH).initialize()
    net.module_.load_state_dict(fitted.module_.state_dict())
    outs = [*net.forward_iter(X), *net.iter_logits(X), *net.iter_features(X)]
    assert all(not t.requires_grad for out in outs for t in _tensors(out))
    outs = list(net.forward_iter(X, training=True))
    assert all(out.requires_grad for out in outs)
