"""skal.NeuralNetClassifier: inputs, labels, logits convention, feature taps."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from skorch.dataset import ValidSplit
from torch import nn

import skal
from skal._data import to_device
from tests.conftest import TupleMLP, make_net

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"
)


@pytest.fixture(scope="module")
def fitted(blobs):
    X, y = blobs
    return make_net(module=skal.nets.MLP, module__num_classes=3).fit(X, y)


def test_is_a_skorch_classifier():
    import skorch

    assert issubclass(skal.NeuralNetClassifier, skorch.NeuralNetClassifier)
    net = skal.NeuralNetClassifier(skal.nets.MLP)
    assert isinstance(net.criterion, type) and net.criterion is nn.CrossEntropyLoss
    assert "_params_to_validate" not in net.get_params()


@pytest.mark.parametrize(
    "convert",
    [
        lambda X: X,
        lambda X: X.astype(np.float32),
        lambda X: torch.from_numpy(X),
        lambda X: torch.from_numpy(X).float(),
        lambda X: pd.DataFrame(X, columns=list("abcd")),
    ],
    ids=["float64", "float32", "tensor64", "tensor32", "dataframe"],
)
def test_accepts_common_input_types(fitted, blobs, convert):
    X, _ = blobs
    expected = fitted.predict_proba(X.astype(np.float32))
    np.testing.assert_allclose(fitted.predict_proba(convert(X)), expected, rtol=1e-6)


@pytest.mark.parametrize("input_type", ["float64", "dataframe"])
def test_fits_on_float64_and_dataframe(blobs, input_type):
    X, y = blobs
    if input_type == "dataframe":
        X = pd.DataFrame(X)
    net = make_net(module=skal.nets.MLP, module__num_classes=3).fit(X, y)
    assert (net.predict(X) == y).mean() > 0.9


def test_predict_proba_is_softmax_of_logits(fitted, blobs):
    X, _ = blobs
    with torch.no_grad():
        logits = fitted.module_.eval()(torch.as_tensor(X[:20], dtype=torch.float32))
    np.testing.assert_allclose(
        fitted.predict_proba(X[:20]), torch.softmax(logits, 1).numpy(), rtol=1e-5
    )


def test_tuple_output_uses_first_element_as_logits(blobs):
    X, y = blobs
    net = make_net(module=TupleMLP, module__num_classes=3).fit(X, y)
    with torch.no_grad():
        logits, _ = net.module_.eval()(torch.as_tensor(X[:10], dtype=torch.float32))
    np.testing.assert_allclose(
        net.predict_proba(X[:10]), torch.softmax(logits, 1).numpy(), rtol=1e-5
    )
    assert (net.predict(X) == y).mean() > 0.9


@pytest.mark.parametrize(
    "labels", [["ant", "bee", "cat"], [3, 7, 11], [-1.5, 0.0, 2.5]], ids=str
)
def test_any_labels_are_encoded_and_decoded(blobs, labels):
    X, y = blobs
    y_any = np.asarray(labels)[y]
    net = make_net(module=skal.nets.MLP, module__num_classes=3).fit(X, y_any)
    np.testing.assert_array_equal(net.classes_, np.unique(y_any))
    pred = net.predict(X)
    assert pred.dtype == y_any.dtype
    assert (pred == y_any).mean() > 0.9


def test_valid_accuracy_compares_encoded_labels(blobs):
    X, y = blobs
    y_str = np.array(["ant", "bee", "cat"])[y]
    net = make_net(
        module=skal.nets.MLP, module__num_classes=3, train_split=ValidSplit(4)
    ).fit(X, y_str)
    assert net.history[-1, "valid_acc"] > 0.85


def test_declared_classes_size_the_output():
    net = skal.NeuralNetClassifier(skal.nets.MLP, classes=["a", "b", "c", "d"])
    net.initialize()
    assert net.module_.layers[-1].out_features == 4
    explicit = skal.NeuralNetClassifier(
        skal.nets.MLP, classes=["a", "b"], module__num_classes=5
    ).initialize()
    assert explicit.module_.layers[-1].out_features == 5


def test_label_outside_declared_classes_is_an_error(blobs):
    X, y = blobs
    net = make_net(module=skal.nets.MLP, classes=[0, 1])
    with pytest.raises(
        ValueError,
        match=r"labels \[2\] that are not among the net's classes \[0, 1\]; add",
    ):
        net.fit(X, y)


def test_embed_is_the_input_of_the_last_linear(fitted, blobs):
    X, _ = blobs
    emb = fitted.embed(X)
    body = fitted.module_.layers[:-1]
    with torch.no_grad():
        expected = body(torch.as_tensor(X, dtype=torch.float32)).numpy()
    assert emb.shape == (len(X), 100)
    np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-6)


def test_features_of_named_layers_and_embedding_layer_parameter(digits):
    X, y = digits
    X = X.reshape(-1, 1, 8, 8)[:200]
    net = make_net(module=skal.nets.SmallCNN, max_epochs=2).fit(X, y[:200])
    feats = net.features(X[:10], ["features.4", "classifier.2"])
    module = net.module_.eval()
    with torch.no_grad():
        xt = torch.as_tensor(X[:10], dtype=torch.float32)
        pooled = module.features[:5](xt)
        hidden = module.classifier[:3](module.features(xt))
    np.testing.assert_allclose(
        feats["features.4"], pooled.numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        feats["classifier.2"], hidden.numpy(), rtol=1e-5, atol=1e-6
    )
    # embedding_layer names the layer whose input is the embedding
    net.set_params(embedding_layer="classifier.1")
    assert net.embed(X[:10]).shape == (10, 64 * 16)


def test_unknown_layer_names_the_valid_ones(fitted, blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="no submodule named 'fc9'.*layers.0"):
        fitted.features(X, ["fc9"])


def test_module_without_linear_needs_embedding_layer(blobs):
    X, y = blobs

    class ConvOnly(nn.Module):
        def __init__(self, num_classes=3):
            super().__init__()
            self.conv = nn.Conv1d(1, num_classes, 4)

        def forward(self, x):
            return self.conv(x.unsqueeze(1)).flatten(1)

    net = make_net(module=ConvOnly, max_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="no nn.Linear layer.*embedding_layer"):
        net.embed(X)


def test_hooks_are_removed_after_feature_extraction(fitted, blobs):
    X, _ = blobs
    fitted.features(X[:5], ["layers.0"])
    fitted.embed(X[:5])
    assert all(not m._forward_hooks for m in fitted.module_.modules())


def test_device_is_a_parameter_not_hard_coded(blobs):
    X, y = blobs
    net = make_net(module=skal.nets.MLP, module__num_classes=3, device="cpu")
    net.fit(X, y)
    assert all(p.device.type == "cpu" for p in net.module_.parameters())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' but torch sees no CUDA"):
            make_net(module=skal.nets.MLP, module__num_classes=3, device="cuda").fit(
                X, y
            )


@needs_cuda
def test_cuda_round_trip(blobs):
    X, y = blobs
    learner = skal.ActiveLearner(
        make_net(module=skal.nets.MLP, device="cuda"), random_state=0
    ).fit(X[:100], y[:100])
    assert next(learner.estimator_.module_.parameters()).is_cuda
    idx = learner.query(X[100:], 5)
    learner.teach(X[100:][idx], y[100:][idx])
    assert learner.score(X, y) > 0.8


def test_loaders_do_not_pin_memory_unless_told(fitted, blobs):
    X, _ = blobs
    dataset = fitted.get_dataset(X)
    for training in (False, True):
        assert not fitted.get_iterator(dataset, training=training).pin_memory
    # a batch of any form reaches the device as tensors
    batch = to_device({"x": X[:3], "t": torch.ones(3)}, "cpu")
    assert isinstance(batch["x"], torch.Tensor) and batch["t"].device.type == "cpu"


@needs_cuda
def test_cuda_pinned_batches_are_copied_without_blocking(blobs):
    X, y = blobs
    net = make_net(module=skal.nets.MLP, module__num_classes=3, device="cuda")
    net.fit(X, y)
    dataset = net.get_dataset(X)
    assert not net.get_iterator(dataset, training=False).pin_memory
    net.iterator_valid__pin_memory = True  # skorch refuses set_params once fitted
    batch, _ = next(iter(net.get_iterator(dataset, training=False)))
    assert batch.is_pinned()
    assert to_device(batch, "cuda").is_cuda
    np.testing.assert_allclose(
        net.predict_proba(X), make_copy_unpinned(net).predict_proba(X), rtol=1e-6
    )


def make_copy_unpinned(net):
    other = pickle.loads(pickle.dumps(net))
    other.iterator_valid__pin_memory = False
    other.module_.to(net.device)
    return other


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_cuda_inference_equals_cpu_inference(blobs, dtype):
    """The pinned, non-blocking, one-batch-ahead loop gives the CPU's numbers."""
    X, y = blobs
    X = (np.abs(X) * 40).astype(dtype)
    net = make_net(module=skal.nets.MLP, module__num_classes=3, inference_batch_size=7)
    net.fit(X, y)
    net.iterator_valid__pin_memory = True  # pinned batches, non-blocking copies
    on_gpu = pickle.loads(pickle.dumps(net))
    on_gpu.set_params(device="cuda")
    on_gpu.module_.to("cuda")
    assert next(on_gpu.module_.parameters()).is_cuda
    np.testing.assert_allclose(
        on_gpu.predict_proba(X), net.predict_proba(X), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(on_gpu.embed(X), net.embed(X), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("width", [2, 5])
@pytest.mark.parametrize("declared", [False, True])
def test_logits_width_must_match_the_classes(blobs, width, declared):
    """Too few outputs would fail inside cross_entropy, too many would train a
    net whose predict_proba has extra columns."""
    X, y = blobs  # 3 classes
    params = dict(module=skal.nets.MLP, module__num_classes=width)
    if declared:
        params["classes"] = [0, 1, 2]
    with pytest.raises(
        ValueError,
        match=rf"MLP returned logits of shape \(\d+, {width}\), but there are 3 "
        r"classes.*module__num_classes=3",
    ):
        make_net(**params).fit(X, y)


def test_logits_width_message_for_a_module_without_class_count(blobs):
    class Fixed(nn.Module):
        def __init__(self, width=4):
            super().__init__()
            self.fc = nn.Linear(4, width)

        def forward(self, x):
            return self.fc(x)

    X, y = blobs
    with pytest.raises(ValueError, match=r"module__<name>=3.*num_classes"):
        make_net(module=Fixed).fit(X, y)
    with pytest.raises(ValueError, match=r"shape \(\d+, 4\), but there are 3"):
        skal.ActiveLearner(make_net(module=Fixed)).fit(X, y)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score", "embed"])
def test_inference_leaves_torch_global_generator_alone(fitted, blobs, method):
    X, y = blobs
    call = {
        "predict": lambda: fitted.predict(X),
        "predict_proba": lambda: fitted.predict_proba(X),
        "score": lambda: fitted.score(X, y),
        "embed": lambda: fitted.embed(X),
    }[method]
    before = torch.get_rng_state()
    call()
    assert torch.equal(torch.get_rng_state(), before)


def test_learner_inference_leaves_torch_global_generator_alone(blobs):
    X, y = blobs
    learner = skal.ActiveLearner(make_net(), random_state=0).fit(X[:50], y[:50])
    before = torch.get_rng_state()
    learner.predict(X)
    learner.predict_proba(X)
    learner.score(X, y)
    assert torch.equal(torch.get_rng_state(), before)


def test_loader_options_set_on_a_fitted_net_keep_its_weights(blobs):
    # skorch raises for them on an initialized net; they only configure the
    # next DataLoader
    X, y = blobs
    net = make_net(module=skal.nets.MLP, module__num_classes=3, max_epochs=2)
    net = net.fit(X, y)
    weights = {k: v.clone() for k, v in net.module_.state_dict().items()}
    proba = net.predict_proba(X)
    seen = []
    net.set_params(iterator_valid__batch_size=7, iterator_valid__drop_last=False)
    assert net.get_params()["iterator_valid__batch_size"] == 7
    hook = net.module_.register_forward_hook(
        lambda module, args, out: seen.append(len(args[0]))
    )
    try:
        np.testing.assert_allclose(net.predict_proba(X), proba, rtol=1e-5)
    finally:
        hook.remove()
    assert seen[0] == 7 and sum(seen) == len(X)
    for key, value in net.module_.state_dict().items():
        assert torch.equal(value, weights[key])
    # with other parameters, skorch's own handling (re-initialization) stays
    net.set_params(iterator_train__shuffle=False, module__hidden_units=(5,))
    assert net.module_.layers[1].out_features == 5
    assert net.iterator_train__shuffle is False
    with pytest.raises(ValueError, match="iterator_valid__batch_size_"):
        net.set_params(iterator_valid__batch_size_=3)
