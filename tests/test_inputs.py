"""Every input kind through every public method that takes X.

The same 8×8 digit images are given as a float array, a uint8 array, a
tensor, a ``TensorDataset``, a ``Subset`` and a torchvision ``ImageFolder``
(PNG files in a temporary directory); each kind must give the results of the
float array (same picks, same probabilities). Text and tables go through
pipelines.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_digits
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision import datasets as tv_datasets
from torchvision.transforms import v2

import skal
from skal._data import DatasetOracle, labels_at
from skal.model_selection import (
    ActiveLearningSimulation,
    active_learning_curve,
    compare_strategies,
)

KINDS = ["float_array", "uint8_array", "tensor", "dataset", "subset", "image_folder"]
DATASET_KINDS = {"dataset", "subset", "image_folder"}
N_FIT, N_TEACH = 30, 10


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder of 150 grayscale 8×8 PNG digits (classes 0, 1, 2), and the
    same images as a uint8 array in the folder's order."""
    root = tmp_path_factory.mktemp("digits")
    X, y = load_digits(return_X_y=True)
    keep = np.flatnonzero(y < 3)[:150]
    for i in keep:
        d = root / f"class{y[i]}"
        d.mkdir(exist_ok=True)
        Image.fromarray(X[i].reshape(8, 8).astype(np.uint8), mode="L").save(
            d / f"{i:04d}.png"
        )
    ds = tv_datasets.ImageFolder(root, loader=lambda p: Image.open(p).convert("L"))
    images = np.stack([np.asarray(Image.open(p)) for p, _ in ds.samples])[:, None]
    return ds, images.astype(np.uint8), np.asarray(ds.targets)


def as_kind(kind, folder, rows):
    """Rows ``rows`` of the folder's images as the input kind ``kind``."""
    ds, images, targets = folder
    if kind == "float_array":
        return images[rows].astype(np.float64)
    if kind == "uint8_array":
        return images[rows]
    if kind == "tensor":
        return torch.from_numpy(images[rows].astype(np.float32))
    if kind == "dataset":
        return TensorDataset(
            torch.from_numpy(images[rows]), torch.from_numpy(targets[rows])
        )
    if kind == "subset":
        full = TensorDataset(torch.from_numpy(images), torch.from_numpy(targets))
        return Subset(full, list(rows))
    return Subset(ds, list(rows))


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


def learner_run(kind, folder):
    """Every ActiveLearner method on one input kind."""
    _, _, targets = folder
    rows = np.random.RandomState(0).permutation(len(targets))
    lab, pool = rows[:N_FIT], rows[N_FIT:]
    learner = skal.ActiveLearner(cnn(), strategy="entropy", random_state=0)
    y_fit = None if kind in DATASET_KINDS else targets[lab]
    learner.fit(as_kind(kind, folder, lab), y_fit)
    X_pool = as_kind(kind, folder, pool)
    picked = learner.query(X_pool, n=N_TEACH)
    utility = learner.utility(X_pool)
    y_teach = None if kind in DATASET_KINDS else targets[pool[picked]]
    learner.teach(as_kind(kind, folder, pool[picked]), y_teach)
    y_pool = None if kind in DATASET_KINDS else targets[pool]
    return dict(
        picked=picked,
        utility=utility,
        proba=learner.predict_proba(X_pool),
        pred=learner.predict(X_pool),
        score=learner.score(X_pool, y_pool),
        n_labeled=learner.n_labeled_,
    )


@pytest.fixture(scope="module")
def reference(folder):
    return learner_run("float_array", folder)


@pytest.mark.parametrize("kind", KINDS)
def test_learner_methods(kind, folder, reference):
    """fit/teach/query/utility/predict/predict_proba/score on each kind give the
    float array's results (labels from the items when y is omitted)."""
    out = learner_run(kind, folder)
    np.testing.assert_array_equal(out["picked"], reference["picked"])
    np.testing.assert_allclose(out["utility"], reference["utility"], atol=1e-5)
    np.testing.assert_allclose(out["proba"], reference["proba"], atol=1e-5)
    np.testing.assert_array_equal(out["pred"], reference["pred"])
    assert out["score"] == pytest.approx(reference["score"])
    assert out["n_labeled"] == N_FIT + N_TEACH


@pytest.mark.parametrize("kind", KINDS)
def test_net_methods(kind, folder, reference):
    """The net's fit/predict/predict_proba/embed/features on each kind."""
    _, _, targets = folder
    rows = np.arange(60)
    y = None if kind in DATASET_KINDS else targets[rows]
    torch.manual_seed(0)
    net = cnn(classes=[0, 1, 2]).fit(as_kind(kind, folder, rows), y)
    torch.manual_seed(0)
    ref = cnn(classes=[0, 1, 2]).fit(as_kind("float_array", folder, rows), targets)
    X = as_kind(kind, folder, rows)
    X_ref = as_kind("float_array", folder, rows)
    np.testing.assert_allclose(net.predict_proba(X), ref.predict_proba(X_ref), 1e-5)
    np.testing.assert_array_equal(net.predict(X), ref.predict(X_ref))
    np.testing.assert_allclose(net.embed(X), ref.embed(X_ref), atol=1e-5)
    feats = net.features(X, ["features.1"])["features.1"]
    np.testing.assert_allclose(
        feats, ref.features(X_ref, ["features.1"])["features.1"], atol=1e-5
    )


@pytest.mark.parametrize(
    "kind", ["uint8_array", "tensor", "dataset", "subset", "image_folder"]
)
def test_head_nets_predict_on_each_kind(kind, folder):
    """predict_dynamics (TiDAL) and predict_loss (learning loss) read each kind
    as they read the float array."""
    _, images, targets = folder
    layers = ["features.1", "features.3"]
    common = dict(module__channels=4, module__hidden=16, max_epochs=1)
    rows = np.arange(40)
    X_ref = images[rows].astype(np.float64)
    tidal = skal.nets.TiDALClassifier(
        skal.nets.SmallCNN, tidal_layers=layers, classes=[0, 1, 2], **common
    ).fit(X_ref, targets[rows])
    lloss = skal.nets.LLossClassifier(
        skal.nets.SmallCNN, lloss_layers=layers, classes=[0, 1, 2], **common
    ).fit(X_ref, targets[rows])
    X = as_kind(kind, folder, rows)
    np.testing.assert_allclose(
        tidal.predict_dynamics(X), tidal.predict_dynamics(X_ref), atol=1e-6
    )
    np.testing.assert_allclose(lloss.predict_loss(X), lloss.predict_loss(X_ref), 1e-5)


def test_fake_data_dataset():
    """A torchvision dataset without a label store (FakeData): the labels are
    read from its items; PIL images become uint8 tensors, cast to float32."""
    ds = tv_datasets.FakeData(size=40, image_size=(1, 8, 8), num_classes=3)
    labels = np.array([ds[i][1] for i in range(len(ds))])
    net = cnn(classes=[0, 1, 2], max_epochs=1).fit(ds)
    assert list(net.history[:, "train_loss"])  # trained
    assert net.predict_proba(ds).shape == (40, 3)
    learner = skal.ActiveLearner(cnn(), classes=[0, 1, 2], random_state=0)
    learner.fit(Subset(ds, range(20)))
    np.testing.assert_array_equal(learner.y_labeled_, labels[:20])
    picked = learner.query(Subset(ds, range(20, 40)), n=3)
    assert len(set(picked.tolist())) == 3 and picked.max() < 20


def test_dataset_without_labels_needs_y(folder):
    _, images, _ = folder
    unlabeled = TensorDataset(torch.from_numpy(images[:20]))
    with pytest.raises(ValueError, match="carry no label"):
        skal.ActiveLearner(cnn()).fit(unlabeled)
    learner = skal.ActiveLearner(cnn(), random_state=0).fit(unlabeled, [0, 1] * 10)
    assert learner.query(unlabeled, n=2).shape == (2,)


def test_dataset_needs_a_network():
    ds = TensorDataset(torch.randn(10, 3), torch.arange(10) % 2)
    with pytest.raises(TypeError, match="needs a skal.NeuralNetClassifier"):
        skal.ActiveLearner(LogisticRegression()).fit(ds)


# ---------------------------------------------------------------- dtypes
class RecordDtype(skal.strategies.QueryStrategy):
    """Entropy that records the dtype of the pool it is given."""

    def utility(self, context, X):
        self.seen_ = X.dtype
        p = context.predict_proba(X)
        return -(p * np.log(np.clip(p, 1e-12, None))).sum(1)


@pytest.mark.parametrize("dtype", [np.uint8, np.float16])
def test_arrays_keep_their_dtype(dtype, folder):
    """The learner keeps uint8/float16 pools and labelled sets as they are; the
    network converts each sample to float32 on its way to the batch."""
    _, images, targets = folder
    rows = np.random.RandomState(0).permutation(len(targets))  # every class
    X, targets = images[rows].astype(dtype), targets[rows]
    learner = skal.ActiveLearner(cnn(), strategy=RecordDtype(), random_state=0)
    learner.fit(X[:30], targets[:30]).teach(X[30:35], targets[30:35])
    assert learner.X_labeled_.dtype == dtype
    learner.query(X[35:], n=3)
    assert learner.strategy_.seen_ == dtype
    net = learner.estimator_
    sample, _ = net.get_dataset(X[:2])[0]
    assert sample.dtype == torch.from_numpy(X[:1]).dtype  # kept per sample
    xb, _ = next(net.iter_batches(X[:2]))
    assert xb.dtype == torch.float32  # converted per batch
    np.testing.assert_array_equal(xb.numpy(), X[:2].astype(np.float32))


def test_token_ids_keep_their_integer_dtype():
    """Integer batches reach a module with an embedding as they are (token
    ids), and any other module as float32 with their values unchanged."""
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    net = skal.NeuralNetClassifier(TokenBag, classes=[0, 1]).initialize()
    xb, _ = next(net.iter_batches(ids))
    assert xb.dtype == torch.int64
    xb, _ = next(cnn(classes=[0, 1]).initialize().iter_batches(ids))
    assert xb.dtype == torch.float32
    np.testing.assert_array_equal(xb.numpy(), ids)


def test_transform_scales_pixels(folder):
    """transform=ToDtype(scale=True) on uint8 equals training on x / 255."""
    _, images, targets = folder
    scale = v2.ToDtype(torch.float32, scale=True)
    torch.manual_seed(0)
    net = cnn(classes=[0, 1, 2], transform=scale).fit(images[:60], targets[:60])
    torch.manual_seed(0)
    ref = cnn(classes=[0, 1, 2]).fit(images[:60] / 255.0, targets[:60])
    np.testing.assert_allclose(
        net.predict_proba(images[60:]), ref.predict_proba(images[60:] / 255.0), 1e-5
    )


# ------------------------------------------------------- train transforms
class Recorder:
    """A transform that records the shape of each input it is applied to."""

    def __init__(self):
        self.shapes = []

    def __call__(self, x):
        self.shapes.append(tuple(x.shape))
        return x


@pytest.mark.parametrize("strategy", ["entropy", "coreset", "bald", "dynamic_al"])
def test_train_transform_on_training_samples_only(strategy, folder):
    """train_transform sees each training sample on its own and nothing else:
    not prediction, embeddings, pool scoring, nor dynamicAL's G_S."""
    _, images, targets = folder
    rows = np.random.RandomState(0).permutation(len(targets))  # every class
    images, targets = images[rows], targets[rows]
    rec = Recorder()
    net = cnn(train_transform=rec, max_epochs=2, module__dropout=0.2)
    learner = skal.ActiveLearner(net, strategy=strategy, random_state=0)
    learner.fit(images[:30], targets[:30])
    rec = learner.estimator_.train_transform  # the clone's own recorder
    assert rec.shapes == [(1, 8, 8)] * 60  # 2 epochs × 30 samples, one by one
    rec.shapes.clear()
    learner.query(images[30:], n=3)
    learner.predict_proba(images[30:])
    learner.estimator_.embed(images[30:])
    learner.estimator_.features(images[30:], ["features.1"])
    assert rec.shapes == []


def test_train_transform_draws_per_sample(folder):
    """A random v2 transform gets its own parameters for each sample."""
    _, images, targets = folder
    seen = []
    flip = v2.RandomHorizontalFlip(p=0.5)

    def record(x):
        out = flip(x)
        seen.append(bool(torch.equal(out, x)))
        return out

    net = cnn(classes=[0, 1, 2], train_transform=record, max_epochs=1, batch_size=64)
    torch.manual_seed(0)
    net.fit(images[:64], targets[:64])
    assert len(seen) == 64 and 0 < sum(seen) < 64


def test_tidal_dynamics_recorded_on_augmented_input(folder):
    """TiDAL's buffer averages the softmax of the training forward pass, i.e. of
    the augmented input: with a train_transform that blanks every image and
    lr=0, each row is the softmax of the model on a blank image."""
    _, images, targets = folder
    net = skal.nets.TiDALClassifier(
        skal.nets.SmallCNN,
        tidal_layers=["features.1", "features.3"],
        module__channels=4,
        module__hidden=16,
        module__dropout=0.0,
        classes=[0, 1, 2],
        train_transform=torch.zeros_like,
        lr=0.0,
        max_epochs=1,
    ).fit(images[:20], targets[:20])
    with torch.no_grad():
        blank = torch.softmax(net.module_(torch.zeros(1, 1, 8, 8)), 1).numpy()
    np.testing.assert_allclose(net.dynamics_, np.repeat(blank, 20, 0), atol=1e-6)
    assert not np.allclose(net.predict_proba(images[:20]), blank, atol=1e-3)


def test_inference_batch_size(folder):
    """Inference iterates in batches of inference_batch_size, training in
    batch_size; an explicit iterator_valid__batch_size wins."""
    _, images, targets = folder
    net = cnn(classes=[0, 1, 2], inference_batch_size=50).fit(images, targets)
    assert [len(x) for x, _ in net.iter_batches(images[:120])] == [50, 50, 20]
    sizes = [len(x) for x, _ in net.iter_batches(images[:20], batch_size=7)]
    assert sizes == [7, 7, 6]
    net.set_params(inference_batch_size=40)  # a fitted net keeps its weights
    assert [len(x) for x, _ in net.iter_batches(images[:50])] == [40, 10]
    assert net.initialized_
    loader = net.get_iterator(net.get_dataset(images), training=True)
    assert loader.batch_size == 16
    net2 = cnn(classes=[0, 1, 2], iterator_valid__batch_size=7).fit(images, targets)
    assert net2.get_iterator(net2.get_dataset(images)).batch_size == 7
    assert skal.NeuralNetClassifier(skal.nets.MLP).inference_batch_size == 512


def test_dataloader_settings_are_the_users(folder):
    """iterator_valid__* reach the inference DataLoader (workers, pinning)."""
    _, images, targets = folder
    net = cnn(
        classes=[0, 1, 2],
        iterator_valid__num_workers=1,
        iterator_valid__pin_memory=False,
    ).fit(images[:30], targets[:30])
    loader = net.get_iterator(net.get_dataset(images))
    assert loader.num_workers == 1
    ds = TensorDataset(torch.from_numpy(images), torch.from_numpy(targets))
    np.testing.assert_allclose(
        net.predict_proba(ds), net.predict_proba(images.astype(np.float32)), 1e-6
    )


# --------------------------------------------------------------- pipelines
TEXTS = [
    "good great fine",
    "bad awful poor",
    "great good nice",
    "poor bad terrible",
    "fine nice good",
    "awful terrible bad",
] * 5


def _entropy(p):
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(1)


def _pipeline_run(X, y, pipeline, take):
    learner = skal.ActiveLearner(pipeline, strategy="entropy", random_state=0)
    learner.fit(take(X, range(6)), y[:6])
    pool = take(X, range(6, len(y)))
    picked = learner.query(pool, n=3)
    utility = learner.utility(pool)
    # the strategy saw the transformed pool: its utility is the entropy of
    # the fitted pipeline's probabilities, computed here independently
    np.testing.assert_allclose(
        utility, _entropy(learner.estimator_.predict_proba(pool)), atol=1e-12
    )
    np.testing.assert_allclose(utility[picked], np.sort(utility)[::-1][:3])
    learner.teach(take(pool, picked), y[6:][picked])
    assert learner.n_labeled_ == 9
    pred = learner.predict(pool)
    assert learner.predict_proba(pool).shape == (len(y) - 6, 2)
    assert learner.score(pool, y[6:]) == pytest.approx(np.mean(pred == y[6:]))


def test_text_through_a_pipeline():
    """A list of strings reaches TfidfVectorizer as given."""
    y = np.array([1, 0, 1, 0, 1, 0] * 5)
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression())
    _pipeline_run(TEXTS, y, pipe, lambda X, r: [X[i] for i in r])


def test_dataframe_through_a_pipeline():
    """A DataFrame with column names reaches a ColumnTransformer as given."""
    rng = np.random.RandomState(0)
    df = pd.DataFrame(
        {"colour": rng.choice(["red", "blue", "green"], 30), "size": rng.randn(30)}
    )
    y = np.array(df["colour"] == "red", dtype=int)
    y[:2] = [0, 1]
    pipe = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(), ["colour"]), ("passthrough", ["size"])
        ),
        LogisticRegression(),
    )
    _pipeline_run(df, y, pipe, lambda X, r: X.iloc[list(r)])


def test_pipeline_feature_names_checked():
    df = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    learner = skal.ActiveLearner(
        make_pipeline(make_column_transformer(("passthrough", ["a", "b"])),
                      LogisticRegression())
    ).fit(df, [0, 1, 0, 1])  # fmt: skip
    with pytest.raises(ValueError, match="feature names should match"):
        learner.predict(df.rename(columns={"a": "c"}))


# --------------------------------------------------------- model selection
class RecordingLabels(Dataset):
    """Items (x, label); reading a label's value (``.item()``) is recorded."""

    def __init__(self, X, y):
        self.X, self.y, self.read = X, y, set()

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i], _Label(self, i)


class _Label:
    def __init__(self, ds, i):
        self.ds, self.i = ds, i

    def item(self):
        self.ds.read.add(self.i)
        return int(self.ds.y[self.i])


def test_simulation_reads_only_queried_labels(folder):
    """With a Dataset and y=None, the oracle reads the labels of the initial set
    and the queried rows, and of no other row."""
    _, images, targets = folder
    ds = RecordingLabels(images[:80], targets[:80])
    sim = ActiveLearningSimulation(
        skal.ActiveLearner(cnn(max_epochs=1), classes=[0, 1, 2]),
        n_initial=10,
        query_size=5,
        n_rounds=2,
        random_state=0,
    ).fit(ds)
    assert ds.read == set(sim.labeled_indices_.tolist())
    assert len(ds.read) == 20


def test_curve_and_comparison_on_a_dataset(folder):
    """active_learning_curve and compare_strategies read labels of the initial
    sets, queried rows and test rows only."""
    _, images, targets = folder
    ds = RecordingLabels(images[:90], targets[:90])
    learner = skal.ActiveLearner(cnn(max_epochs=1), classes=[0, 1, 2])
    split = [(np.arange(60), np.arange(60, 90))]
    _, scores, queried = active_learning_curve(
        learner, ds, None, cv=split, n_initial=10, query_size=5, n_rounds=1,
        random_state=0, return_queried=True,
    )  # fmt: skip
    assert scores.shape == (1, 2)
    assert ds.read == set(queried.ravel().tolist()) | set(range(60, 90))
    assert len(ds.read) == 15 + 30  # 45 pool labels never read
    ds.read.clear()
    comparison = compare_strategies(
        learner, ds, None, ["random", "margin"], cv=split, n_initial=10,
        query_size=5, n_rounds=1, random_state=0,
    )  # fmt: skip
    assert sorted(comparison.table()["strategy"].tolist()) == ["margin", "random"]
    assert len(ds.read - set(range(60, 90))) <= 2 * 15


def test_simulation_dataset_needs_classes(folder):
    _, images, targets = folder
    ds = TensorDataset(torch.from_numpy(images), torch.from_numpy(targets))
    sim = ActiveLearningSimulation(skal.ActiveLearner(cnn()), n_initial=10)
    with pytest.raises(ValueError, match="declare every class"):
        sim.fit(ds)
    sim = ActiveLearningSimulation(
        skal.ActiveLearner(cnn(), classes=[0, 1, 2]),
        n_initial=10,
        initial="stratified",
    )
    with pytest.raises(ValueError, match="initial='stratified' reads every label"):
        sim.fit(ds)


@pytest.mark.parametrize("kind", [*KINDS, "text", "dataframe"])
def test_model_selection_input_kinds(kind, folder):
    """active_learning_curve, ActiveLearningSimulation and compare_strategies on
    each input kind (Datasets with y=None; text and tables through pipelines)."""
    _, _, targets = folder
    rows = np.arange(60)
    if kind == "text":
        X, y = TEXTS * 2, np.array([1, 0, 1, 0, 1, 0] * 10)
        learner = skal.ActiveLearner(
            make_pipeline(TfidfVectorizer(), LogisticRegression()), classes=[0, 1]
        )
    elif kind == "dataframe":
        rng = np.random.RandomState(0)
        X = pd.DataFrame({"colour": rng.choice(["red", "blue"], 60)})
        y = np.array(X["colour"] == "red", dtype=int)
        learner = skal.ActiveLearner(
            make_pipeline(
                make_column_transformer((OneHotEncoder(), ["colour"])),
                LogisticRegression(),
            ),
            classes=[0, 1],
        )
    else:
        X = as_kind(kind, folder, rows)
        y = None if kind in DATASET_KINDS else targets[rows]
        learner = skal.ActiveLearner(cnn(max_epochs=1), classes=[0, 1, 2])
    loop = dict(n_initial=10, query_size=5, n_rounds=1)
    _, scores = active_learning_curve(learner, X, y, cv=2, random_state=0, **loop)
    assert scores.shape == (2, 2) and np.all((scores >= 0) & (scores <= 1))
    sim = ActiveLearningSimulation(learner, random_state=0, **loop).fit(X, y)
    assert len(np.unique(sim.labeled_indices_)) == 15
    comparison = compare_strategies(
        learner, X, y, ["random"], cv=2, random_state=0, **loop
    )
    assert comparison.table()["strategy"].tolist() == ["random"]


def test_predict_proba_written_batch_by_batch(folder):
    """predict_proba fills one array batch by batch: the softmax of the logits,
    partial last batch included; an empty input gives (0, n_classes)."""
    _, images, targets = folder
    net = cnn(classes=[0, 1, 2], inference_batch_size=7).fit(images, targets)
    with torch.no_grad():
        logits = net.module_.eval()(torch.from_numpy(images[:20]).float())
    np.testing.assert_allclose(
        net.predict_proba(images[:20]), torch.softmax(logits, 1).numpy(), atol=1e-6
    )
    assert net.predict_proba(images[:0]).shape == (0, 3)


def _strategy_net(strategy):
    layers = ["features.1", "features.3"]
    common = dict(
        module__channels=4, module__hidden=16, module__dropout=0.2, max_epochs=2
    )
    if strategy == "tidal":
        return skal.nets.TiDALClassifier(
            skal.nets.SmallCNN, tidal_layers=layers, **common
        )
    if strategy == "lloss":
        return skal.nets.LLossClassifier(
            skal.nets.SmallCNN, lloss_layers=layers, **common
        )
    return skal.NeuralNetClassifier(skal.nets.SmallCNN, **common)


@pytest.mark.parametrize("strategy", skal.strategies.get_strategy_names())
def test_every_strategy_queries_a_dataset_as_the_array(strategy, folder):
    """Each registered strategy picks the same rows from a uint8 Subset of an
    ImageFolder as from the float array of the same images (teach included,
    for stateful strategies)."""
    _, _, targets = folder
    picks = []
    for kind in ("float_array", "image_folder"):
        learner = skal.ActiveLearner(
            _strategy_net(strategy), strategy=strategy, random_state=0
        )
        rows = np.random.RandomState(0).permutation(len(targets))
        y = None if kind == "image_folder" else targets[rows[:40]]
        learner.fit(as_kind(kind, folder, rows[:40]), y)
        pool_rows = rows[40:]
        pool = as_kind(kind, folder, pool_rows)
        first = learner.query(pool, n=5)
        learner.teach(
            as_kind(kind, folder, pool_rows[first]),
            None if kind == "image_folder" else targets[pool_rows[first]],
        )
        picks.append((first, learner.query(pool, n=5)))
    for a, b in zip(*picks, strict=True):
        np.testing.assert_array_equal(a, b)


def test_arrays_and_datasets_mix(folder):
    """A labelled set grown from an array and then a Dataset is a ConcatDataset
    of both; subset_size draws candidates from a Dataset pool."""
    _, images, targets = folder
    rows = np.random.RandomState(0).permutation(len(targets))
    learner = skal.ActiveLearner(cnn(), subset_size=30, random_state=0)
    learner.fit(images[rows[:30]], targets[rows[:30]])
    pool = TensorDataset(torch.from_numpy(images[rows[30:]]))
    picked = learner.query(pool, n=5)
    assert len(np.unique(picked)) == 5 and picked.max() < len(pool)
    learner.teach(Subset(pool, picked.tolist()), targets[rows[30:]][picked])
    assert isinstance(learner.X_labeled_, torch.utils.data.ConcatDataset)
    assert learner.n_labeled_ == len(learner.X_labeled_) == 35
    np.testing.assert_array_equal(learner.y_labeled_[30:], targets[rows[30:]][picked])
    assert learner.predict(pool).shape == (len(pool),)


# ------------------------------------------- labels as the items define them
class CountingLoader:
    """An ImageFolder loader that counts the images it loads (picklable)."""

    def __init__(self):
        self.loads = 0

    def __call__(self, path):
        self.loads += 1
        return Image.open(path).convert("L")


def parity(label):
    return label % 2


def test_dataset_labels_follow_target_transform(folder):
    """Defect 5: an ImageFolder with target_transform gives the transformed
    labels, as its items do, and reads no image to find them."""
    ds = folder[0]
    loader = CountingLoader()
    odd_even = tv_datasets.ImageFolder(ds.root, loader=loader, target_transform=parity)
    rows = np.random.RandomState(0).permutation(len(odd_even))[:40]
    from_items = np.asarray([odd_even[int(i)][1] for i in rows])
    loader.loads = 0
    np.testing.assert_array_equal(
        labels_at(Subset(odd_even, rows.tolist()), np.arange(40)),
        from_items,
    )
    np.testing.assert_array_equal(DatasetOracle(odd_even)[rows], from_items)
    assert loader.loads == 0  # labels read without the images
    learner = skal.ActiveLearner(cnn(max_epochs=1), random_state=0).fit(
        Subset(odd_even, rows.tolist())
    )
    assert learner.classes_.tolist() == [0, 1]  # not the folder's 0, 1, 2


class RelabelledItems(Dataset):
    """A Dataset whose ``targets`` attribute is not what its items carry."""

    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.targets[i]) + 10


def test_labels_of_an_unknown_dataset_come_from_its_items(folder):
    """Defect 5: a ``targets`` attribute is trusted only where the items are
    known to carry it; elsewhere (the simulation's oracle too) the items'
    own labels are read."""
    _, images, targets = folder
    ds = RelabelledItems(images, targets)
    rows = np.array([3, 70, 140])
    np.testing.assert_array_equal(labels_at(ds, rows), targets[rows] + 10)
    np.testing.assert_array_equal(DatasetOracle(ds)[rows], targets[rows] + 10)


# ------------------------------------------------------------- NaN in items
def test_nan_in_dataset_items_is_refused_naming_the_item():
    """Defect 9: NaN inside a Dataset's items is refused as in arrays, with an
    error naming the item, in training and when a pool is scored."""
    rng = np.random.RandomState(0)
    x = torch.from_numpy(rng.rand(60, 1, 8, 8).astype(np.float32))
    y = torch.arange(60) % 3
    bad = x.clone()
    bad[17, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinity in item 17 "):
        skal.ActiveLearner(cnn(), random_state=0).fit(TensorDataset(bad, y))
    learner = skal.ActiveLearner(cnn(), random_state=0).fit(TensorDataset(x, y))
    pool = x[:40].clone()
    pool[33, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or infinity in item 33 "):
        learner.query(TensorDataset(pool), n=2)
    with pytest.raises(ValueError, match="Input X_pool contains NaN"):  # arrays
        learner.query(bad.numpy(), n=2)
    tidal = skal.nets.TiDALClassifier(  # samples carry their index beside them
        skal.nets.SmallCNN,
        tidal_layers=["features.1"],
        classes=[0, 1, 2],
        module__channels=4,
        max_epochs=1,
    )
    with pytest.raises(ValueError, match=r"NaN or infinity in item 17 "):
        tidal.fit(TensorDataset(bad, y))


# ------------------------------------------------------------- single class
def test_fit_on_a_single_class_is_refused():
    """Defect 11: one class and no classes= would build a one-output net whose
    every query is a tie: refused as LogisticRegression refuses it."""
    X = np.random.RandomState(0).randn(30, 4).astype(np.float32)
    one = np.zeros(30, dtype=int)
    net = skal.NeuralNetClassifier(skal.nets.MLP, max_epochs=1)
    with pytest.raises(ValueError, match=r"y holds one class.*classes=\[\.\.\.\]"):
        skal.ActiveLearner(net).fit(X, one)
    with pytest.raises(ValueError, match=r"y holds one class.*classes=\[\.\.\.\]"):
        skal.NeuralNetClassifier(skal.nets.MLP, max_epochs=1).fit(X, one)
    with pytest.raises(ValueError, match="at least 2 classes"):
        skal.ActiveLearner(net, classes=[0]).fit(X, one)
    # the other classes declared: a first labelled set of one class is fine
    learner = skal.ActiveLearner(net, classes=[0, 1], random_state=0).fit(X, one)
    assert learner.predict_proba(X).shape == (30, 2)


# ------------------------------------------------- random transforms alone
@pytest.mark.parametrize(
    "augment",
    [
        v2.RandomCrop(8, padding=1),
        v2.RandomResizedCrop(8, antialias=True),
        v2.RandomRotation(10),
    ],
    ids=lambda t: type(t).__name__,
)
def test_single_random_v2_transform_survives_clone(augment, folder):
    """Defect 12: a torchvision random transform alone (not in a Compose) as
    transform or train_transform: clone, get_params(deep=True), fit and grid
    search work, and the clone holds its own copy of the transform."""
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    _, images, targets = folder
    net = cnn(max_epochs=1, transform=augment, train_transform=augment)
    copy = clone(net)
    assert type(copy.transform) is type(augment) and copy.transform is not augment
    assert repr(copy.train_transform) == repr(augment)
    params = net.get_params(deep=True)
    assert params["transform"] is augment and params["train_transform"] is augment
    learner = skal.ActiveLearner(net, random_state=0)
    deep = learner.get_params(deep=True)
    assert deep["estimator__train_transform"] is augment
    rows = np.random.RandomState(0).permutation(len(targets))
    learner.fit(images[rows[:40]], targets[rows[:40]])
    assert learner.estimator_.train_transform is not augment
    search = GridSearchCV(learner, {"estimator__lr": [1e-2]}, cv=2)
    search.fit(images[rows[:60]], targets[rows[:60]])
    assert search.best_params_ == {"estimator__lr": 1e-2}


# ------------------------------------------------ dtypes and memory layout
class TokenBag(torch.nn.Module):
    """An EmbeddingBag classifier that refuses anything but int64 token ids."""

    def __init__(self, num_classes=2):
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(50, 8)
        self.out = torch.nn.Linear(8, num_classes)

    def forward(self, x):
        if x.dtype != torch.int64:
            raise TypeError(f"token ids must be int64, got {x.dtype}")
        return self.out(self.embed(x))


def test_int64_token_ids_reach_the_module_unchanged():
    """Defect 14: the learner keeps integer arrays for a network: int64 token
    ids reach an embedding as int64 (the learner cast them to float64)."""
    tokens = np.random.RandomState(0).randint(0, 50, size=(60, 6))
    y = tokens[:, 0] % 2
    net = skal.NeuralNetClassifier(TokenBag, max_epochs=1)
    learner = skal.ActiveLearner(net, random_state=0).fit(tokens[:40], y[:40])
    assert learner.X_labeled_.dtype == np.int64
    picked = learner.query(tokens[40:], n=3)
    learner.teach(tokens[40:][picked], y[40:][picked])
    assert learner.predict(tokens).shape == (60,)


def test_arrays_with_negative_strides(folder):
    """Defect 15: a view with negative strides (X[..., ::-1], BGR to RGB) is
    read as its contiguous copy (torch.from_numpy refused it)."""
    _, images, targets = folder
    rows = np.random.RandomState(0).permutation(len(targets))
    X = images[rows].astype(np.float32)[..., ::-1]
    assert any(s < 0 for s in X.strides)
    results = []
    for data in (X, np.ascontiguousarray(X)):
        learner = skal.ActiveLearner(cnn(), random_state=0)
        learner.fit(data[:40], targets[rows[:40]])
        results.append((learner.query(data[40:], n=5), learner.predict_proba(data)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=0, atol=0)


# ------------------------------------------------------------ PIL items
def test_pil_items_reach_transform_as_uint8_tensors(folder):
    """Defect 16: PIL images become uint8 (C, H, W) tensors before transform
    sees them, as the docs say; so ToDtype(scale=True) scales an ImageFolder's
    pixels as it scales a uint8 array's (it passed PIL images through)."""
    ds, images, targets = folder
    seen = []

    def record(x):
        seen.append((type(x), x.dtype, tuple(x.shape)))
        return x

    cnn(transform=record, classes=[0, 1, 2], max_epochs=1).fit(Subset(ds, [0, 1]))
    assert set(seen) == {(torch.Tensor, torch.uint8, (1, 8, 8))}
    scale = v2.ToDtype(torch.float32, scale=True)
    net = cnn(transform=scale, classes=[0, 1, 2], max_epochs=1).fit(images, targets)
    from_folder = next(net.iter_batches(ds))[0]
    from_array = next(net.iter_batches(images))[0]
    torch.testing.assert_close(from_folder, from_array, rtol=0, atol=0)
    assert float(from_folder.max()) <= 1.0


def test_pil_only_transform_gets_a_clear_error(folder):
    """Defects 16, 18: a transform that takes PIL images only (torchvision's
    v1 ToTensor) fails with an error naming it and what replaces it."""
    from torchvision import transforms as v1

    ds = folder[0]
    net = cnn(transform=v1.ToTensor(), classes=[0, 1, 2], max_epochs=1)
    with pytest.raises(TypeError, match=r"transform=ToTensor\(\) failed on sample"):
        net.fit(Subset(ds, [0, 1, 2, 3]))
    with pytest.raises(TypeError, match=r"v2\.ToDtype\(torch\.float32, scale=True\)"):
        net.fit(Subset(ds, [0, 1, 2, 3]))


# ------------------------------------------------------------ clear errors
class Items(Dataset):
    """40 items made by ``make(i)``."""

    def __init__(self, make):
        self.make = make

    def __len__(self):
        return 40

    def __getitem__(self, i):
        return self.make(i)


def uneven_item(i):
    return torch.zeros(1, 8 + i % 2, 8), i % 2


def text_item(i):
    return "a caption", i % 2


def triple_item(i):
    return torch.zeros(1, 8, 8), i % 2, "extra"


@pytest.mark.parametrize(
    "make, error, match",
    [
        (uneven_item, ValueError, r"different shapes: item \d+ is \(1, \d, 8\) and"),
        (text_item, TypeError, r"sample \d+ is a str as read; a sample must be"),
        (triple_item, ValueError, r"a tuple of 3 elements; items must be x or"),
    ],
    ids=["shapes", "type", "structure"],
)
def test_dataset_item_errors_are_clear(make, error, match):
    """Defect 18: items of different shapes, of a type that is not a sample,
    or of another structure than x or (x, y) are refused with errors that
    say so (they came from deep inside torch's collate or the module)."""
    learner = skal.ActiveLearner(cnn(max_epochs=1), classes=[0, 1], random_state=0)
    with pytest.raises(error, match=match):
        learner.fit(Items(make), np.arange(40) % 2)


def reshape_to_three_columns(x):
    return x.view(-1, 3)


@pytest.mark.parametrize(
    "transform, error, match",
    [
        ("scale", TypeError, "transform must be a callable applied to one sample"),
        (v2.ToDtype, TypeError, "got the class torchvision.*ToDtype; create one"),
        (
            reshape_to_three_columns,
            ValueError,
            r"failed on sample \d+ \(a uint8 tensor of shape \(1, 8, 8\)\)",
        ),
    ],
    ids=["string", "class", "raises"],
)
def test_transform_misuse_errors_are_clear(transform, error, match, folder):
    """Defect 18: a transform that is not a callable, a transform class not
    instantiated, and a transform that raises give errors naming the
    parameter and the sample (they were raw torch errors)."""
    _, images, targets = folder
    rows = np.random.RandomState(0).permutation(len(targets))[:40]
    with pytest.raises(error, match=match):
        cnn(transform=transform, max_epochs=1).fit(images[rows], targets[rows])


def test_sklearn_cross_validation_over_a_dataset():
    """sklearn's cross-validation indexes a torch Dataset item by item into a
    list of (x, y) tuples: a clear error naming the remedy, and the remedy
    (skorch's SliceDataset with y) scores the same folds as the arrays."""
    from sklearn.model_selection import KFold, cross_val_score
    from skorch.helper import SliceDataset

    rng = np.random.RandomState(0)
    X = rng.normal(size=(90, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    dataset = TensorDataset(torch.from_numpy(X), torch.from_numpy(y))

    def learner():
        net = skal.NeuralNetClassifier(
            skal.nets.MLP, max_epochs=3, train_split=None, batch_size=16
        )
        return skal.ActiveLearner(net, random_state=0)

    with pytest.raises(TypeError, match=r"list of tuples holding tensors.*Slice"):
        cross_val_score(learner(), dataset, y, cv=3, error_score="raise")
    cv = KFold(3)
    on_arrays = cross_val_score(learner(), X, y, cv=cv)
    on_slices = cross_val_score(learner(), SliceDataset(dataset, idx=0), y, cv=cv)
    np.testing.assert_allclose(on_slices, on_arrays)
