"""Hugging Face ``datasets`` and dict items, wherever a torch Dataset is taken.

The 8×8 digit images of classes 0-2 are built in memory as a
``datasets.Dataset`` (an ``Image`` column and a ``ClassLabel`` column) and
read in each format: Python (PIL images), numpy (which drops the channel
axis of size 1), torch, pandas, and under ``set_transform``. Each must give
the results of the float array of the same images: same picks, same
probabilities. Nothing is downloaded.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

import skal
from skal.model_selection import (
    ActiveLearningSimulation,
    active_learning_curve,
    compare_strategies,
)

from .test_inputs import _strategy_net

datasets = pytest.importorskip("datasets")

FORMATS = ["python", "numpy", "torch", "pandas", "set_transform"]
N_FIT, N_TEACH = 30, 10


@pytest.fixture(scope="module")
def digits3():
    """150 grayscale 8×8 digits of classes 0, 1, 2: uint8 (N, 1, 8, 8), labels."""
    X, y = load_digits(return_X_y=True)
    keep = np.flatnonzero(y < 3)[:150]
    images = (X[keep] * 16).clip(0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    return images, y[keep]


def _hf_images(images, labels, label=True):
    columns = {"image": [Image.fromarray(im[0], mode="L") for im in images]}
    features = {"image": datasets.Image()}
    if label:
        columns["label"] = labels
        features["label"] = datasets.ClassLabel(names=["zero", "one", "two"])
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _to_pixel_values(batch):
    """A processor-like transform: PIL images to float tensors, label kept."""
    out = {
        "pixel_values": [
            torch.from_numpy(np.asarray(im, dtype=np.float32))[None]
            for im in batch["image"]
        ]
    }
    if "label" in batch:
        out["label"] = batch["label"]
    return out


def as_format(ds, fmt):
    if fmt == "python":
        return ds
    if fmt == "set_transform":
        ds = ds.with_format(None)
        ds.set_transform(_to_pixel_values)
        return ds
    return ds.with_format(fmt)


@pytest.fixture(scope="module")
def hf(digits3):
    images, labels = digits3
    return _hf_images(images, labels)


def cnn(**kwargs):
    params = dict(
        module__channels=4,
        module__hidden=16,
        module__dropout=0.0,
        max_epochs=3,
        batch_size=16,
        lr=1e-2,
    )
    return skal.NeuralNetClassifier(skal.nets.SmallCNN, **{**params, **kwargs})


def _rows(ds, rows, as_subset):
    if as_subset:
        return Subset(ds, [int(r) for r in rows])
    return ds.select(rows)


def learner_run(X, y, rows, take):
    """Every ActiveLearner method; ``take(rows)`` gives those rows of X."""
    lab, pool = rows[:N_FIT], rows[N_FIT:]
    learner = skal.ActiveLearner(cnn(), strategy="entropy", random_state=0)
    learner.fit(take(lab), None if y is None else y[lab])
    X_pool = take(pool)
    picked = learner.query(X_pool, n=N_TEACH)
    utility = learner.utility(X_pool)
    learner.teach(take(pool[picked]), None if y is None else y[pool[picked]])
    return dict(
        picked=picked,
        utility=utility,
        proba=learner.predict_proba(X_pool),
        score=learner.score(X_pool, None if y is None else y[pool]),
        n_labeled=learner.n_labeled_,
        y_labeled=learner.y_labeled_,
    )


@pytest.fixture(scope="module")
def reference(digits3):
    images, labels = digits3
    rows = np.random.RandomState(0).permutation(len(labels))
    X = images.astype(np.float64)
    return learner_run(X, labels, rows, lambda r: X[r])


@pytest.mark.parametrize("as_subset", [False, True], ids=["select", "subset"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_learner_on_each_format(fmt, as_subset, hf, digits3, reference):
    """fit and teach read the labels from the label column; query, utility,
    predict_proba and score give the float array's results in every format,
    whether rows are taken with datasets' select or a torch Subset."""
    _, labels = digits3
    ds = as_format(hf, fmt)
    rows = np.random.RandomState(0).permutation(len(labels))
    out = learner_run(ds, None, rows, lambda r: _rows(ds, r, as_subset))
    np.testing.assert_array_equal(out["picked"], reference["picked"])
    np.testing.assert_allclose(out["utility"], reference["utility"], atol=1e-5)
    np.testing.assert_allclose(out["proba"], reference["proba"], atol=1e-5)
    assert out["score"] == pytest.approx(reference["score"])
    np.testing.assert_array_equal(out["y_labeled"], reference["y_labeled"])
    assert out["n_labeled"] == N_FIT + N_TEACH


@pytest.mark.parametrize("fmt", FORMATS)
def test_net_methods_on_each_format(fmt, hf, digits3):
    """The net's fit (labels from the items), predict_proba, embed, features."""
    images, labels = digits3
    ds = as_format(hf, fmt)
    torch.manual_seed(0)
    net = cnn(classes=[0, 1, 2]).fit(ds)
    torch.manual_seed(0)
    ref = cnn(classes=[0, 1, 2]).fit(images.astype(np.float64), labels)
    X_ref = images.astype(np.float64)
    np.testing.assert_allclose(net.predict_proba(ds), ref.predict_proba(X_ref), 1e-5)
    np.testing.assert_allclose(net.embed(ds), ref.embed(X_ref), atol=1e-5)
    np.testing.assert_allclose(
        net.features(ds, ["features.1"])["features.1"],
        ref.features(X_ref, ["features.1"])["features.1"],
        atol=1e-5,
    )


@pytest.mark.parametrize("strategy", skal.strategies.get_strategy_names())
def test_every_strategy_queries_a_hf_dataset_as_the_array(strategy, hf, digits3):
    """Each registered strategy picks the same rows from a numpy-format
    datasets.Dataset (labels from the column, teach included) as from the
    float array of the same images."""
    images, labels = digits3
    ds = hf.with_format("numpy")
    rows = np.random.RandomState(0).permutation(len(labels))
    X = images.astype(np.float64)
    picks = []
    for kind in ("array", "hf"):
        learner = skal.ActiveLearner(
            _strategy_net(strategy), strategy=strategy, random_state=0
        )
        if kind == "array":
            learner.fit(X[rows[:40]], labels[rows[:40]])
            pool = X[rows[40:]]
        else:
            learner.fit(ds.select(rows[:40]))
            pool = ds.select(rows[40:])
        first = learner.query(pool, n=5)
        if kind == "array":
            learner.teach(pool[first], labels[rows[40:]][first])
        else:
            learner.teach(Subset(pool, first.tolist()))
        picks.append((first, learner.query(pool, n=5)))
    for a, b in zip(*picks, strict=True):
        np.testing.assert_array_equal(a, b)


def test_model_selection_on_a_hf_dataset(hf, digits3):
    """With y=None the simulations read the label column: the same queried
    rows and scores as on a TensorDataset of the same images and labels."""
    images, labels = digits3
    tensors = TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    learner = skal.ActiveLearner(cnn(max_epochs=1), classes=[0, 1, 2])
    loop = dict(n_initial=10, query_size=5, n_rounds=2, random_state=0)
    out = {}
    for name, X in (("tensors", tensors), ("hf", hf.with_format("numpy"))):
        sim = ActiveLearningSimulation(learner, **loop).fit(X)
        _, scores = active_learning_curve(learner, X, None, cv=2, **loop)
        comparison = compare_strategies(learner, X, None, ["margin"], cv=2, **loop)
        out[name] = (sim.labeled_indices_, scores, comparison.scores["margin"])
    np.testing.assert_array_equal(out["hf"][0], out["tensors"][0])
    np.testing.assert_allclose(out["hf"][1], out["tensors"][1])
    np.testing.assert_allclose(out["hf"][2], out["tensors"][2])


def test_labeling_session_on_a_hf_dataset(hf, digits3, tmp_path):
    """A LabelingSession over a datasets.Dataset pool: teach, query, reopen."""
    _, labels = digits3
    pool = hf.remove_columns("label").with_format("torch")  # a pool: no labels
    learner = skal.ActiveLearner(cnn(max_epochs=1), classes=[0, 1, 2], random_state=0)
    session = skal.LabelingSession(learner, pool, tmp_path / "session")
    session.teach(range(20), labels[:20])
    rows = session.query(5)
    assert len(set(rows.tolist())) == 5 and min(rows) >= 20
    session.teach(rows, labels[rows])
    session = skal.LabelingSession(learner, pool, tmp_path / "session")
    assert len(session.labeled_indices_) == 25
    assert not set(session.query(5).tolist()) & set(session.labeled_indices_.tolist())


# ------------------------------------------------------------- formats
@pytest.mark.parametrize("fmt", ["python", "numpy", "torch", "pandas"])
def test_image_columns_are_channels_first_in_every_format(fmt, digits3):
    """Grayscale and RGB image columns reach transform as (C, H, W) uint8 in
    every format, equal to the images' pixels."""
    images, labels = digits3
    rgb = np.repeat(images[:6], 3, axis=1)
    rgb[:, 1] = 255 - rgb[:, 1]  # channels differ
    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(im[0], mode="L") for im in images[:6]],
            "rgb": [Image.fromarray(im.transpose(1, 2, 0), mode="RGB") for im in rgb],
            "label": labels[:6],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "rgb": datasets.Image(),
                "label": datasets.Value("int64"),
            }
        ),
    )
    ds = as_format(ds, fmt)
    for key, expected in (("image", images[:6]), ("rgb", rgb)):
        items = skal.DictDataset(ds, input_keys=key)
        for i in range(6):
            x, y = items[i]
            x = x.numpy() if torch.is_tensor(x) else x
            assert x.dtype == np.uint8
            np.testing.assert_array_equal(x, expected[i])
            assert int(y) == labels[i]


def test_targets_read_from_the_column(hf, digits3):
    """targets is the label column, in the dataset's row order (select,
    shuffle); under set_transform it is None and labels come from the items."""
    _, labels = digits3
    shuffled = hf.shuffle(seed=0)
    order = np.asarray(shuffled[:]["label"])
    np.testing.assert_array_equal(skal.DictDataset(shuffled).targets, order)
    np.testing.assert_array_equal(
        skal.DictDataset(hf.with_format("torch").select([5, 2])).targets,
        labels[[5, 2]],
    )
    custom = as_format(hf, "set_transform")
    assert skal.DictDataset(custom).targets is None
    learner = skal.ActiveLearner(cnn(max_epochs=1), random_state=0)
    learner.fit(custom.select(range(30)))
    np.testing.assert_array_equal(learner.y_labeled_, labels[:30])
    unlabeled = hf.remove_columns("label")
    assert skal.DictDataset(unlabeled).targets is None
    with pytest.raises(ValueError, match="carry no label"):
        skal.ActiveLearner(cnn(max_epochs=1)).fit(unlabeled)
    learner = skal.ActiveLearner(cnn(max_epochs=1), random_state=0)
    learner.fit(unlabeled.select(range(30)), labels[:30])
    assert learner.query(unlabeled, n=3).shape == (3,)


# ---------------------------------------------------- text and dict items
class Recording(nn.Module):
    """A bag-of-embeddings classifier that records what forward receives."""

    calls = []

    def __init__(self, num_classes=2, vocab=20):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab, 8, mode="sum")
        self.out = nn.Linear(8, num_classes)

    def forward(self, input_ids, attention_mask=None):
        Recording.calls.append(
            (type(input_ids), input_ids.dtype, attention_mask is not None)
        )
        weights = None if attention_mask is None else attention_mask.float()
        return self.out(self.embed(input_ids, per_sample_weights=weights))


def _tokens(n=60, length=5, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, 20, size=(n, length))
    labels = (ids[:, 0] > 10).astype(int)
    mask = np.ones_like(ids)
    mask[:, -1] = 0
    return ids, mask, labels


@pytest.mark.parametrize("fmt", ["python", "numpy", "torch"])
def test_token_ids_in_each_format(fmt):
    """A text dataset's input_ids (lists in the Python format) reach forward as
    int64 batches; the label column does not; every format gives the same
    probabilities."""
    ids, mask, labels = _tokens()
    ds = datasets.Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "label": labels}
    )
    ds = as_format(ds, fmt)
    Recording.calls = []
    torch.manual_seed(0)
    net = skal.NeuralNetClassifier(Recording, max_epochs=2, classes=[0, 1]).fit(ds)
    assert set(Recording.calls) == {(torch.Tensor, torch.int64, False)}
    torch.manual_seed(0)
    ref = skal.NeuralNetClassifier(Recording, max_epochs=2, classes=[0, 1])
    ref.fit(ids, labels)
    np.testing.assert_allclose(net.predict_proba(ds), ref.predict_proba(ids), 1e-6)


def test_several_input_columns_reach_forward_as_keywords():
    """input_keys=[...]: forward gets one keyword argument per column, never
    the label; the whole loop runs (fit, query, teach)."""
    ids, mask, labels = _tokens()
    ds = datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": mask, "label": labels}
    ).with_format("torch")
    items = skal.DictDataset(ds, input_keys=["input_ids", "attention_mask"])
    Recording.calls = []
    learner = skal.ActiveLearner(
        skal.NeuralNetClassifier(Recording, max_epochs=2),
        strategy="entropy",
        random_state=0,
    )
    learner.fit(Subset(items, range(20)))
    picked = learner.query(Subset(items, range(20, 60)), n=4)
    learner.teach(Subset(items, (picked + 20).tolist()))
    assert set(Recording.calls) == {(torch.Tensor, torch.int64, True)}
    np.testing.assert_array_equal(learner.y_labeled_[20:], labels[picked + 20])


class DictItems(Dataset):
    """A plain torch Dataset whose items are dicts."""

    def __init__(self, X, y, keys=("image", "label")):
        self.X, self.y, self.keys = X, y, keys

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return {self.keys[0]: self.X[i], self.keys[1]: self.y[i], "id": f"row{i}"}


class OnlyTensors(nn.Module):
    """Fails unless forward gets one tensor: a dict (label included) would
    reach it as keyword arguments."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.cnn = skal.nets.SmallCNN(num_classes=num_classes, channels=4, hidden=16)

    def forward(self, x):
        assert torch.is_tensor(x)
        return self.cnn(x)


def test_dict_items_of_a_torch_dataset(digits3):
    """Items {"image", "label", "id"} of a torch Dataset: the image reaches the
    module, the label is read as the label, the id is ignored; other keys are
    named with DictDataset; results equal those of the TensorDataset of the
    same images."""
    images, labels = digits3
    X, y = torch.from_numpy(images), torch.from_numpy(labels)
    results = []
    for ds in (
        DictItems(X, y),
        skal.DictDataset(
            DictItems(X, y, keys=("pixels", "target")),
            input_keys="pixels",
            label_key="target",
        ),
        TensorDataset(X, y),
    ):
        torch.manual_seed(0)
        net = skal.NeuralNetClassifier(OnlyTensors, max_epochs=2, classes=[0, 1, 2])
        learner = skal.ActiveLearner(net, random_state=0).fit(Subset(ds, range(40)))
        results.append(
            (learner.y_labeled_, learner.query(ds, n=5), learner.predict_proba(ds))
        )
    for result in results[:2]:
        np.testing.assert_array_equal(result[0], labels[:40])
        np.testing.assert_array_equal(result[1], results[2][1])
        np.testing.assert_allclose(result[2], results[2][2], atol=1e-6)


def test_dict_item_errors(digits3):
    images, labels = digits3
    ambiguous = [{"a": images[0], "b": images[1], "label": 0}] * 4
    with pytest.raises(ValueError, match=r"none of the default input keys.*input_keys"):
        skal.ActiveLearner(cnn()).fit(ambiguous_dataset(ambiguous))
    ds = _hf_images(images[:4], labels[:4])
    with pytest.raises(ValueError, match=r"column\(s\) \['pixels'\] not in the"):
        skal.DictDataset(ds, input_keys="pixels")
    with pytest.raises(ValueError, match=r"column\(s\) \['target'\] not in"):
        skal.DictDataset(ds, label_key="target")
    with pytest.raises(ValueError, match="label column 'label' is also an input"):
        skal.DictDataset(ds, input_keys=["image", "label"])[0]
    with pytest.raises(TypeError, match="input_keys must be None, a column name"):
        skal.DictDataset(ds, input_keys=3)
    with pytest.raises(TypeError, match="label_key must be None or a column name"):
        skal.DictDataset(ds, label_key=["label"])
    with pytest.raises(TypeError, match="dataset must be a datasets.Dataset"):
        skal.DictDataset(42)
    with pytest.raises(TypeError, match=r"not a dict"):
        skal.DictDataset(TensorDataset(torch.zeros(3, 2)))[0]
    splits = datasets.DatasetDict({"train": ds, "test": ds})
    with pytest.raises(TypeError, match=r"DatasetDict with splits \['test', 'train'\]"):
        skal.ActiveLearner(cnn()).fit(splits)
    streaming = ds.to_iterable_dataset()
    with pytest.raises(TypeError, match="streaming"):
        skal.ActiveLearner(cnn()).fit(streaming, labels[:4])


def ambiguous_dataset(items):
    class Items(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    return Items()
