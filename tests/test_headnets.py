"""TiDAL and learning-loss heads: buffer bookkeeping, losses, strategies."""

import pickle

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import entr, softmax
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit
from torch.utils.data import WeightedRandomSampler

import skal
from skal.nets import (
    MLP,
    VGG11BN,
    AuxiliaryHead,
    ResNet18,
    TutorialCNN,
    pairwise_ranking_loss,
)
from skal.nets._headnets import TrainingDynamicsBuffer
from skal.strategies import LLoss, TiDAL, get_strategy

MLP_TAPS = ["layers.2", "layers.4"]  # the two hidden ReLUs of MLP(32, 16)


# a fixed seed, the global RNG state restored (conftest.py: one thread)
pytestmark = pytest.mark.usefixtures("seeded")


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=240,
        n_features=8,
        n_informative=6,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        class_sep=1.0,
        flip_y=0.05,
        random_state=0,
    )
    return X, y


def make_net(cls=skal.TiDALClassifier, **kwargs):
    params = dict(
        module=MLP,
        module__hidden_units=(32, 16),
        module__in_features=8,
        max_epochs=4,
        lr=0.01,
        batch_size=32,
        classes=[0, 1, 2],
    )
    layers = "tidal_layers" if cls is skal.TiDALClassifier else "lloss_layers"
    params[layers] = MLP_TAPS
    params.update(kwargs)
    return cls(**params)


class RecordTrainingPasses(Callback):
    """Independent record of each training pass: a hook on the module output."""

    def on_train_begin(self, net, **kwargs):
        self.passes = []  # (epoch, index, proba) per training batch
        self.epoch = -1
        self._handle = net.module_.register_forward_hook(self._hook)

    def on_epoch_begin(self, net, **kwargs):
        self.epoch += 1

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        self._index = batch[0]["__skal_index__"].numpy() if training else None

    def _hook(self, module, inputs, output):
        if module.training:
            proba = torch.softmax(output.detach(), dim=1).numpy().astype(np.float64)
            self.passes.append((self.epoch, self._index, proba))

    def on_train_end(self, net, **kwargs):
        self._handle.remove()


def _recorded_mean(passes, n_rows, n_classes):
    total = np.zeros((n_rows, n_classes))
    count = np.zeros(n_rows)
    for _, index, proba in passes:
        np.add.at(total, index, proba)
        np.add.at(count, index, 1)
    with np.errstate(invalid="ignore"):
        return total / count[:, None], count


# ------------------------------------------------------- the TD buffer
def test_buffer_is_per_epoch_mean_with_shuffle_and_train_split(data):
    X, y = data
    rec = RecordTrainingPasses()
    net = make_net(train_split=ValidSplit(0.25, random_state=0), callbacks=[rec])
    net.fit(X, y)
    # every training row seen once per epoch: the mean over the epochs
    by_epoch = {}
    for epoch, index, proba in rec.passes:
        by_epoch.setdefault(epoch, {}).update(zip(index.tolist(), proba))
    assert sorted(by_epoch) == [0, 1, 2, 3]
    train_rows = sorted(by_epoch[0])
    assert len(train_rows) == 180  # 3/4 of 240; shuffled batches
    expected = np.mean([[by_epoch[e][i] for i in train_rows] for e in range(4)], 0)
    np.testing.assert_allclose(net.dynamics_[train_rows], expected, atol=1e-6)
    np.testing.assert_array_equal(net.dynamics_counts_[train_rows], 4)
    # validation rows never enter the buffer
    valid_rows = np.setdiff1d(np.arange(len(X)), train_rows)
    assert len(valid_rows) == 60
    assert np.isnan(net.dynamics_[valid_rows]).all()
    np.testing.assert_array_equal(net.dynamics_counts_[valid_rows], 0)
    # the validation loss is the classification loss alone
    assert "valid_loss" in net.history[-1]


def test_buffer_with_sampler_repeating_samples(data):
    X, y = data
    rec = RecordTrainingPasses()
    sampler = WeightedRandomSampler(
        np.where(y == 0, 5.0, 1.0), num_samples=len(y), replacement=True
    )
    net = make_net(
        callbacks=[rec], iterator_train__sampler=sampler, iterator_train__shuffle=False
    )
    net.fit(X, y)
    expected, count = _recorded_mean(rec.passes, len(X), 3)
    assert count.max() > 4  # some rows were drawn more than once per epoch
    np.testing.assert_array_equal(net.dynamics_counts_, count)
    seen = count > 0
    np.testing.assert_allclose(net.dynamics_[seen], expected[seen], atol=1e-6)
    assert np.isnan(net.dynamics_[~seen]).all()


def test_buffer_reset_at_each_warm_started_teach(data):
    X, y = data
    learner = skal.ActiveLearner(make_net(), strategy="tidal", random_state=0)
    learner.fit(X[:60], y[:60])
    assert learner.estimator_.dynamics_.shape == (60, 3)
    idx = learner.query(X[60:], n=20)
    learner.teach(X[60:][idx], y[60:][idx])
    net = learner.estimator_
    assert net.dynamics_.shape == (80, 3)
    # reset: the counts are this fit's epochs, not the sum over rounds
    np.testing.assert_array_equal(net.dynamics_counts_, net.max_epochs)
    assert len(net.history) == 2 * net.max_epochs  # warm start kept the history


def test_loss_is_ce_plus_lambda_kl_to_running_mean():
    torch.manual_seed(0)
    net = make_net(tidal_lambda=0.7).initialize()
    net.on_train_begin(net, X=np.zeros((5, 8)))
    net.history.new_epoch()
    X = {"__skal_x__": torch.zeros(3, 8), "__skal_index__": torch.tensor([4, 0, 2])}
    y = torch.tensor([0, 2, 1])
    head = torch.randn(3, 3)
    log_q = torch.log_softmax(head, dim=1)
    target = 0
    for step in range(2):
        logits = torch.randn(3, 3)
        p = torch.softmax(logits, dim=1)
        target = (target * step + p) / (step + 1)  # includes this pass
        kl = (target * (target.log() - log_q)).sum(dim=1).mean()
        ce = torch.nn.functional.cross_entropy(logits, y)
        loss = net.get_loss((logits, head), y, X=X, training=True)
        assert float(loss) == pytest.approx(float(ce + 0.7 * kl), rel=1e-5)
        net.history.new_batch()
        net.on_batch_end(net, batch=(X, y), training=True, y_pred=(logits, head))
    # validation batches: the criterion alone, and the buffer is left alone
    before = net._td_buffer_.mean.clone()
    loss = net.get_loss((logits, head), y, X=X, training=False)
    assert float(loss) == pytest.approx(float(ce), rel=1e-6)
    net.on_batch_end(net, batch=(X, y), training=False, y_pred=(logits, head))
    assert torch.equal(net._td_buffer_.mean, before)
    torch.testing.assert_close(net._td_buffer_.mean[[4, 0, 2]], target)


def test_kl_term_decreases(data):
    X, y = data
    net = make_net(max_epochs=30).fit(X, y)
    kl = [np.mean(row) for row in net.history[:, "batches", :, "tidal_kl"]]
    assert np.mean(kl[-5:]) < 0.6 * kl[0]
    assert np.polyfit(np.arange(len(kl)), kl, 1)[0] < 0


def test_predicted_dynamics_closer_than_snapshot_fig7(data):
    """Paper Fig. 7: KL(actual TD || predicted) < KL(actual TD || snapshot)."""
    X, y = data
    net = make_net(max_epochs=40).fit(X, y)
    actual = net.dynamics_

    def kl(p, q):
        q = np.clip(q.astype(np.float64), 1e-12, None)
        return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))

    kl_predicted = kl(actual, net.predict_dynamics(X))
    kl_snapshot = kl(actual, net.predict_proba(X))
    assert kl_predicted < kl_snapshot


# ------------------------------------------- the TD buffer on its own
def _numpy_running_means(batches, n_rows, n_classes):
    """Per-row mean of the float64 softmax of every pass so far, per batch."""
    passes = [[] for _ in range(n_rows)]
    snapshots = []
    for index, logits in batches:
        for i, p in zip(index, softmax(logits.astype(np.float64), axis=1)):
            passes[i].append(p)
        means = np.full((n_rows, n_classes), np.nan)
        for i, ps in enumerate(passes):
            if ps:
                means[i] = np.mean(ps, axis=0)
        snapshots.append(means)
    return snapshots, np.array([len(ps) for ps in passes])


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(1, 7),
    n_classes=st.integers(2, 4),
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    seed=st.integers(0, 2**31 - 1),
)
def test_buffer_running_mean_equals_numpy_mean_of_passes(
    n_rows, n_classes, sizes, seed
):
    """Any batches, rows repeated within and across them: exact running mean."""
    rng = np.random.RandomState(seed)
    batches = [
        (rng.randint(n_rows, size=size), 3 * rng.randn(size, n_classes))
        for size in sizes
    ]
    expected, counts = _numpy_running_means(batches, n_rows, n_classes)
    buffer = TrainingDynamicsBuffer(n_rows)
    for (index, logits), means in zip(batches, expected):
        update = buffer.update(torch.as_tensor(index), torch.tensor(logits))
        # the loss's target already includes this batch's passes
        np.testing.assert_allclose(update.targets.numpy(), means[index], atol=1e-6)
        buffer.commit(update)
    dynamics, got_counts = buffer.result(n_classes)
    np.testing.assert_array_equal(got_counts, counts)
    np.testing.assert_allclose(dynamics, expected[-1], atol=1e-6)  # NaN == NaN
    assert np.isnan(dynamics[counts == 0]).all()


def test_buffer_update_is_written_only_on_commit():
    buffer = TrainingDynamicsBuffer(4)
    first = buffer.update(torch.tensor([1, 3]), torch.randn(2, 3))
    buffer.commit(first)
    before = buffer.mean.clone(), buffer.count.clone()
    pending = buffer.update(torch.tensor([1, 1, 0]), torch.randn(3, 3))
    assert torch.equal(buffer.mean, before[0]) and torch.equal(buffer.count, before[1])
    assert pending.rows.tolist() == [0, 1] and pending.count.tolist() == [1, 3]
    buffer.commit(pending)
    assert buffer.count.tolist() == [1, 3, 0, 1]


def test_buffer_rows_never_updated_are_nan_with_zero_count():
    buffer = TrainingDynamicsBuffer(5)
    dynamics, counts = buffer.result(n_classes=3)  # no training batch at all
    assert dynamics.shape == (5, 3) and np.isnan(dynamics).all()
    np.testing.assert_array_equal(counts, 0)
    buffer.commit(buffer.update(torch.tensor([0, 2]), torch.zeros(2, 3)))
    dynamics, counts = buffer.result(n_classes=3)
    np.testing.assert_array_equal(counts, [1, 0, 1, 0, 0])
    np.testing.assert_allclose(dynamics[[0, 2]], 1 / 3)
    assert np.isnan(dynamics[[1, 3, 4]]).all()


def test_each_fit_starts_a_new_buffer(data):
    X, y = data
    buffers = []

    class Spy(Callback):
        def on_epoch_end(self, net, **kwargs):
            buffers.append(net._td_buffer_)

    net = make_net(max_epochs=2, callbacks=[Spy()]).fit(X, y)
    assert net._td_buffer_ is None  # released once dynamics_ is set
    net.partial_fit(X[:50], y[:50])
    assert buffers[0] is buffers[1] and buffers[2] is buffers[3]
    assert buffers[1] is not buffers[2]
    assert buffers[2].n_rows == 50
    np.testing.assert_array_equal(net.dynamics_counts_, 2)


# ------------------------------------------------- the head as a component
def test_head_is_a_skorch_component(data):
    X, y = data
    modes = []

    class Modes(Callback):
        def on_batch_begin(self, net, training=False, **kwargs):
            modes.append((training, net.tidal_module_.training))

    net = make_net(max_epochs=1, callbacks=[Modes()], tidal_module__hidden=8)
    net.fit(X, y)
    assert net.tidal_module_.projections[0].out_features == 8
    assert all(train == mode for train, mode in modes)
    net.predict_dynamics(X[:5])
    assert not net.tidal_module_.training
    head_params = {id(p) for p in net.tidal_module_.parameters()}
    optimized = {id(p) for g in net.optimizer_.param_groups for p in g["params"]}
    assert head_params <= optimized
    device = torch.device(net.device)
    assert all(p.device == device for p in net.tidal_module_.parameters())
    np.testing.assert_allclose(net.predict_proba(X).sum(axis=1), 1.0, rtol=1e-5)


def test_save_and_load_params_include_the_head(data, tmp_path):
    X, y = data
    net = make_net(max_epochs=2).fit(X, y)
    files = dict(f_params=tmp_path / "m.pt", f_tidal_module=tmp_path / "h.pt")
    net.save_params(**files)
    other = make_net().initialize()
    other.load_params(**files)
    np.testing.assert_allclose(
        other.predict_dynamics(X), net.predict_dynamics(X), rtol=1e-6
    )


@pytest.mark.parametrize(
    "cls, keys",
    [
        (skal.TiDALClassifier, {"tidal_kl", "dynamics_update"}),
        (skal.LLossClassifier, {"lloss_ranking"}),
    ],
)
def test_training_step_dict_carries_the_head_values(data, cls, keys):
    X, y = data
    steps = []

    class Steps(Callback):
        def on_batch_end(self, net, training=False, **kwargs):
            if training:
                steps.append(kwargs)

    net = make_net(cls, max_epochs=2, callbacks=[Steps()]).fit(X, y)
    assert all(keys <= set(step) for step in steps)
    key = net._aux_history_key
    recorded = [v for epoch in net.history[:, "batches", :, key] for v in epoch]
    assert len(recorded) == len(steps) == 2 * 8  # 240 rows, batches of 32
    np.testing.assert_allclose(recorded, [float(s[key]) for s in steps])


@pytest.mark.parametrize("cls", [skal.TiDALClassifier, skal.LLossClassifier])
def test_head_loss_reaches_the_backbone(data, cls):
    X, y = data
    weight = "tidal_lambda" if cls is skal.TiDALClassifier else "lloss_lambda"
    extra = {} if cls is skal.TiDALClassifier else {"lloss_detach_epoch": None}

    def backbone(value):
        torch.manual_seed(0)
        net = make_net(cls, max_epochs=2, **{weight: value}, **extra).fit(X, y)
        return net.module_.layers[1].weight.detach().clone()

    assert not torch.allclose(backbone(0.0), backbone(5.0))


def test_lloss_detached_features_leave_the_backbone_alone(data):
    X, y = data

    def backbone(value):
        torch.manual_seed(0)
        net = make_net(
            skal.LLossClassifier, max_epochs=2, lloss_lambda=value, lloss_detach_epoch=0
        ).fit(X, y)
        return net.module_.layers[1].weight.detach().clone()

    assert torch.equal(backbone(0.0), backbone(5.0))


BACKBONES = [
    (ResNet18, None),
    (torchvision.models.resnet18, ["layer1", "layer2", "layer3", "layer4"]),
    (VGG11BN, ["features.6", "features.13", "features.28"]),
    (TutorialCNN, ["conv1", "conv2", "fc1", "fc2"]),
]


@pytest.mark.parametrize("module, layers", BACKBONES)
def test_backbones_by_named_layers(module, layers):
    rng = np.random.RandomState(0)
    X = rng.randn(8, 3, 32, 32).astype(np.float32)
    y = np.arange(8) % 2
    net = skal.TiDALClassifier(
        module, tidal_layers=layers, classes=[0, 1], max_epochs=1, batch_size=4
    )
    if module is torchvision.models.resnet18:
        net.set_params(module__num_classes=2)
    net.fit(X, y)
    assert net.predict_dynamics(X).shape == (8, 2)
    assert net.predict_proba(X).shape == (8, 2)
    if module is ResNet18:
        widths = [p.in_features for p in net.tidal_module_.projections]
        assert widths == [64, 128, 256, 512]


def test_layers_required_for_other_modules():
    net = skal.TiDALClassifier(MLP, classes=[0, 1])
    with pytest.raises(ValueError, match="tidal_layers=None is only valid"):
        net.initialize()
    net = skal.TiDALClassifier(MLP, classes=[0, 1], tidal_layers=["nope"])
    with pytest.raises(ValueError, match="no submodule named 'nope'"):
        net.initialize()


# --------------------------------------------------------- ranking loss
def test_pairwise_ranking_loss_by_hand():
    pred = torch.tensor([0.2, 1.5, -0.3, 0.9, 0.4, 2.0])
    true = torch.tensor([1.0, 0.5, 2.0, 0.1, 0.7, 3.0])
    # pairs (0,5), (1,4), (2,3); sign +1 when the first true loss is larger
    # (0,5): 1.0 < 3.0 -> -1: max(0, 1 + (0.2 - 2.0)) = 0
    # (1,4): 0.5 < 0.7 -> -1: max(0, 1 + (1.5 - 0.4)) = 2.1
    # (2,3): 2.0 > 0.1 -> +1: max(0, 1 - (-0.3 - 0.9)) = 2.2
    expected = (0.0 + 2.1 + 2.2) / 3
    assert float(pairwise_ranking_loss(pred, true)) == pytest.approx(expected)
    # margin 0.5; odd batch: the middle sample is left out
    pred7 = torch.cat([pred[:3], torch.tensor([9.0]), pred[3:]])
    true7 = torch.cat([true[:3], torch.tensor([9.0]), true[3:]])
    expected = (0.0 + 1.6 + 1.7) / 3
    assert float(pairwise_ranking_loss(pred7, true7, 0.5)) == pytest.approx(expected)
    assert float(pairwise_ranking_loss(pred[:1], true[:1])) == 0.0


def test_ranking_loss_is_recorded_and_detach_epoch_counts_per_fit(data):
    X, y = data
    net = make_net(skal.LLossClassifier, max_epochs=3, lloss_detach_epoch=2)
    net.fit(X, y)
    assert len(net.history[:, "batches", :, "lloss_ranking"][0]) > 0
    assert net._epochs_in_fit_ == 3
    net.partial_fit(X, y)
    assert net._epochs_in_fit_ == 3


def test_auxiliary_head_shapes():
    head = AuxiliaryHead(2, out_features=1, hidden=4)
    out = head([torch.zeros(3, 5, 2, 2), torch.zeros(3, 7)])
    assert out.shape == (3, 1)
    assert [p.in_features for p in head.projections] == [5, 7]
    with pytest.raises(ValueError, match="expected 2 feature tensors"):
        head([torch.zeros(3, 5)])


# ------------------------------------------------------------ strategies
@pytest.fixture(scope="module")
def fitted_tidal(data):
    X, y = data
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return make_net(max_epochs=5).fit(X, y)


def _context(net, X, y):
    from skal.strategies import QueryContext

    return QueryContext(net, np.arange(3), X, y, np.random.RandomState(0))


def test_tidal_scores(data, fitted_tidal):
    X, y = data
    ctx = _context(fitted_tidal, X, y)
    q = fitted_tidal.predict_dynamics(X).astype(np.float64)
    entropy = TiDAL("entropy").utility(ctx, X)
    np.testing.assert_allclose(entropy, entr(q).sum(axis=1), rtol=1e-4, atol=1e-6)
    y_hat = fitted_tidal.predict_proba(X).argmax(axis=1)
    q_hat = q[np.arange(len(q)), y_hat]
    q_other = np.where(np.eye(3, dtype=bool)[y_hat], -np.inf, q).max(axis=1)
    margin = TiDAL("margin").utility(ctx, X)
    np.testing.assert_allclose(margin, 1 - (q_hat - q_other), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="'score' parameter of TiDAL"):
        TiDAL("nope").utility(ctx, X)


def test_tidal_needs_a_tidal_net(data):
    X, y = data
    plain = skal.NeuralNetClassifier(MLP, classes=[0, 1, 2], max_epochs=1).fit(X, y)
    with pytest.raises(TypeError, match="TiDALClassifier"):
        TiDAL().utility(_context(plain, X, y), X)
    with pytest.raises(TypeError, match="LLossClassifier"):
        LLoss().utility(_context(plain, X, y), X)


def test_default_candidate_subset(data):
    X, y = data
    assert get_strategy("tidal").default_subset_size == 10_000
    seen = []

    class Counting(TiDAL):
        default_subset_size = 50

        def utility(self, context, X):
            seen.append(len(X))
            return super().utility(context, X)

    learner = skal.ActiveLearner(make_net(max_epochs=1), Counting(), random_state=0)
    learner.fit(X[:40], y[:40])
    idx = learner.query(X[40:], n=5)
    assert len(np.unique(idx)) == 5 and idx.max() < 200
    learner.set_params(subset_size=30).query(X[40:], n=5)
    learner.set_params(subset_size=None).query(X[40:], n=60)  # n > default
    assert seen == [50, 30, 200]


def test_lloss_strategy_queries_predicted_loss(data):
    X, y = data
    learner = skal.ActiveLearner(
        make_net(skal.LLossClassifier), strategy="lloss", random_state=0
    ).fit(X[:100], y[:100])
    np.testing.assert_allclose(
        learner.utility(X[100:]), learner.estimator_.predict_loss(X[100:]), rtol=1e-6
    )
    idx = learner.query(X[100:], n=5)
    u = learner.utility(X[100:])
    np.testing.assert_array_equal(np.sort(u[idx]), np.sort(u)[-5:])


# ----------------------------------------- clone / pickle / GridSearchCV
@pytest.mark.parametrize(
    "cls, strategy",
    [(skal.TiDALClassifier, "tidal"), (skal.LLossClassifier, "lloss")],
)
def test_learner_clone_pickle_gridsearch(data, cls, strategy):
    X, y = data
    learner = skal.ActiveLearner(make_net(cls, max_epochs=2), strategy, random_state=0)
    cloned = clone(learner)
    assert cloned.estimator.get_params()["module"] is MLP
    learner.fit(X[:80], y[:80])
    restored = pickle.loads(pickle.dumps(learner))
    np.testing.assert_allclose(
        restored.utility(X[80:]), learner.utility(X[80:]), rtol=1e-6
    )
    np.testing.assert_allclose(restored.predict_proba(X), learner.predict_proba(X))
    restored.teach(X[80:90], y[80:90])
    assert restored.n_labeled_ == 90
    weight = (
        "estimator__tidal_lambda"
        if cls is skal.TiDALClassifier
        else ("estimator__lloss_lambda")
    )
    search = GridSearchCV(clone(learner), {weight: [0.5, 1.0]}, cv=2).fit(X, y)
    assert search.best_params_[weight] in (0.5, 1.0)
