"""ActiveLearner: the public contract, errors, warm start, determinism."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from skorch.callbacks import Callback, LRScheduler

import skal
from skal.strategies import QueryStrategy, get_strategy_names
from tests.conftest import make_net

UNCERTAINTY = ["random", "least_confidence", "margin", "entropy"]


def _split(X, y, n_init=40):
    return X[:n_init], y[:n_init], X[n_init:], y[n_init:]


@pytest.fixture
def fitted_lr(blobs):
    X, y = blobs
    X0, y0, Xp, _ = _split(X, y)
    return skal.ActiveLearner(LogisticRegression(), random_state=0).fit(X0, y0), Xp


# ----------------------------------------------------------------- contract
@pytest.mark.parametrize("strategy", UNCERTAINTY)
@pytest.mark.parametrize("kind", ["lr", "net"])
def test_query_returns_distinct_indices_ordered_by_utility(blobs, strategy, kind):
    X, y = blobs
    X0, y0, Xp, _ = _split(X, y)
    est = LogisticRegression() if kind == "lr" else make_net()
    learner = skal.ActiveLearner(est, strategy=strategy, random_state=0)
    assert learner.fit(X0, y0) is learner
    idx = learner.query(Xp, n=15)
    assert idx.shape == (15,) and idx.dtype.kind == "i"
    assert len(np.unique(idx)) == 15 and idx.min() >= 0 and idx.max() < len(Xp)
    u = clone(learner).fit(X0, y0).utility(Xp)
    assert u.shape == (len(Xp),) and u.dtype == np.float64
    # most informative first: the queried utilities are the 15 largest, sorted
    np.testing.assert_array_equal(np.sort(u)[::-1][:15], u[idx])


def test_teach_grows_labelled_set_and_keeps_every_label(blobs, net_factory):
    X, y = blobs
    X0, y0, Xp, yp = _split(X, y)
    learner = skal.ActiveLearner(net_factory(), random_state=0).fit(X0, y0)
    assert learner.n_labeled_ == len(y0)
    for n in (5, 1, 12):
        idx = learner.query(Xp, n=n)
        before = learner.n_labeled_
        assert learner.teach(Xp[idx], yp[idx]) is learner
        assert learner.n_labeled_ == before + n
        np.testing.assert_array_equal(learner.X_labeled_[-n:], Xp[idx])
        np.testing.assert_array_equal(learner.y_labeled_[-n:], yp[idx])
        Xp, yp = np.delete(Xp, idx, axis=0), np.delete(yp, idx)
    np.testing.assert_array_equal(learner.X_labeled_[: len(X0)], X0)
    assert learner.n_labeled_ == len(learner.y_labeled_) == len(y0) + 18


def test_predict_score_and_proba(blobs):
    X, y = blobs
    learner = skal.ActiveLearner(LogisticRegression()).fit(X[:200], y[:200])
    proba = learner.predict_proba(X[200:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(learner.predict(X[200:]), proba.argmax(axis=1))
    assert learner.score(X[200:], y[200:]) > 0.9


def test_string_labels_round_trip(blobs, net_factory):
    X, y = blobs
    names = np.array(["ant", "bee", "cat"])[y]
    learner = skal.ActiveLearner(net_factory(max_epochs=40), random_state=0)
    learner.fit(X[:150], names[:150])
    assert set(learner.predict(X[150:])) <= set(names)
    assert learner.score(X[150:], names[150:]) > 0.85
    learner.teach(X[150:160], names[150:160])
    assert learner.n_labeled_ == 160


# --------------------------------------------------------- declared classes
@pytest.mark.parametrize("kind", ["lr", "net"])
def test_declared_classes_not_yet_seen(blobs, kind):
    X, y = blobs
    seen = y < 2  # the initial set lacks class 2
    est = LogisticRegression() if kind == "lr" else make_net()
    learner = skal.ActiveLearner(est, classes=[0, 1, 2], random_state=0)
    learner.fit(X[seen][:50], y[seen][:50])
    proba = learner.predict_proba(X)
    assert proba.shape == (len(X), 3)
    if kind == "lr":
        np.testing.assert_array_equal(proba[:, 2], 0.0)
    else:  # the net was built with one output per declared class
        assert learner.estimator_.module_.net[-1].out_features == 3
    idx = np.flatnonzero(y == 2)[:5]
    learner.teach(X[idx], y[idx])  # a declared class arrives: fine
    assert learner.n_labeled_ == 55
    assert (learner.predict_proba(X[idx])[:, 2] > 0).all()


# ------------------------------------------------------------------ errors
class _NoProba(BaseEstimator, ClassifierMixin):
    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.zeros(len(X))


def _err_cases():
    X = np.random.RandomState(0).randn(30, 4)
    y = np.arange(30) % 3
    nan = X.copy()
    nan[3, 1] = np.nan
    inf = X.copy()
    inf[0, 0] = np.inf

    def fitted(**kw):
        return skal.ActiveLearner(LogisticRegression(), **kw).fit(X, y)

    return [
        (
            "query before fit",
            lambda: skal.ActiveLearner(LogisticRegression()).query(X, 2),
            NotFittedError,
            "not fitted",
        ),
        (
            "utility before fit",
            lambda: skal.ActiveLearner(LogisticRegression()).utility(X),
            NotFittedError,
            "not fitted",
        ),
        (
            "teach before fit",
            lambda: skal.ActiveLearner(LogisticRegression()).teach(X, y),
            NotFittedError,
            "not fitted",
        ),
        (
            "n zero",
            lambda: fitted().query(X, 0),
            ValueError,
            r"The 'n' parameter of ActiveLearner.query must be an int in \[1, 30\]; "
            "got 0",
        ),
        ("n negative", lambda: fitted().query(X, -3), ValueError, r"30\]; got -3"),
        ("n above pool", lambda: fitted().query(X, 31), ValueError, r"30\]; got 31"),
        ("n float", lambda: fitted().query(X, 2.0), TypeError, "got 2.0 of type float"),
        ("n string", lambda: fitted().query(X, "2"), TypeError, "got '2' of type str"),
        ("n bool", lambda: fitted().query(X, True), TypeError, "got True of type bool"),
        ("empty pool", lambda: fitted().query(X[:0], 1), ValueError, "0 sample"),
        (
            "pool wrong features",
            lambda: fitted().query(X[:, :3], 1),
            ValueError,
            "3 features, but ActiveLearner is expecting 4",
        ),
        (
            "utility wrong features",
            lambda: fitted().utility(X[:, :2]),
            ValueError,
            "2 features",
        ),
        (
            "NaN in X",
            lambda: skal.ActiveLearner(LogisticRegression()).fit(nan, y),
            ValueError,
            "Input X contains NaN",
        ),
        (
            "inf in X",
            lambda: skal.ActiveLearner(LogisticRegression()).fit(inf, y),
            ValueError,
            "Input X contains infinity",
        ),
        (
            "NaN in pool",
            lambda: fitted().query(nan, 2),
            ValueError,
            "Input X_pool contains NaN",
        ),
        (
            "inf in pool",
            lambda: fitted().utility(inf),
            ValueError,
            "Input X_pool contains infinity",
        ),
        (
            "unknown strategy",
            lambda: skal.ActiveLearner(LogisticRegression(), strategy="entropie").fit(
                X, y
            ),
            ValueError,
            r"valid names are \[.*'entropy'.*'margin'",
        ),
        (
            "strategy wrong type",
            lambda: skal.ActiveLearner(LogisticRegression(), strategy=3).fit(X, y),
            TypeError,
            "'strategy' parameter of ActiveLearner must be an instance of str or an "
            "object with the method select; got 3 of type int",
        ),
        (
            "teach length mismatch",
            lambda: fitted().teach(X[:5], y[:4]),
            ValueError,
            "X has 5 rows but y has 4 labels",
        ),
        (
            "teach undeclared label",
            lambda: fitted().teach(X[:2], [0, 7]),
            ValueError,
            r"labels \[7\] that are not among the learner's classes \[0, 1, 2\]",
        ),
        (
            "teach missing label",
            lambda: fitted().teach(X[:2], [0, None]),
            ValueError,
            r"labels \[None\] that are not among the learner's classes \[0, 1, 2\]",
        ),
        (
            "teach label outside declared classes",
            lambda: fitted(classes=[0, 1, 2, 3]).teach(X[:2], [3, 9]),
            ValueError,
            r"labels \[9\].*add them to classes",
        ),
        (
            "fit label outside declared classes",
            lambda: skal.ActiveLearner(LogisticRegression(), classes=[0, 1]).fit(X, y),
            ValueError,
            r"labels \[2\]",
        ),
        (
            "duplicate classes",
            lambda: skal.ActiveLearner(LogisticRegression(), classes=[0, 1, 1, 2]).fit(
                X, y
            ),
            ValueError,
            "duplicates",
        ),
        (
            "subset_size zero",
            lambda: skal.ActiveLearner(LogisticRegression(), subset_size=0).fit(X, y),
            ValueError,
            "subset_size",
        ),
        (
            "n above subset_size",
            lambda: fitted(subset_size=5).query(X, 6),
            ValueError,
            "n=6 is larger than subset_size=5",
        ),
        (
            "no predict_proba",
            lambda: skal.ActiveLearner(_NoProba()).fit(X, y),
            TypeError,
            "predict_proba",
        ),
        (
            "SVC without probability",
            lambda: skal.ActiveLearner(SVC()).fit(X, y),
            TypeError,
            "predict_proba.*got SVC",
        ),
        (
            "continuous y",
            lambda: skal.ActiveLearner(LogisticRegression()).fit(
                X, np.linspace(0, 1, 30)
            ),
            ValueError,
            "Unknown label type",
        ),
    ]


@pytest.mark.parametrize(
    "call, exc, match", [c[1:] for c in _err_cases()], ids=[c[0] for c in _err_cases()]
)
def test_bad_input_gives_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_set_based_strategy_utility_raises(blobs):
    class SetOnly(QueryStrategy):
        per_sample = False

        def select(self, context, X, n):
            return np.arange(n)

    X, y = blobs
    learner = skal.ActiveLearner(LogisticRegression(), strategy=SetOnly()).fit(X, y)
    np.testing.assert_array_equal(learner.query(X, 3), [0, 1, 2])
    with pytest.raises(TypeError, match="no per-sample utility"):
        learner.utility(X)


@pytest.mark.parametrize(
    "bad", [np.array([0, 0, 1]), np.array([0, 1]), np.array([0, 1, 99]), [0.5, 1, 2]]
)
def test_broken_strategy_output_is_caught(blobs, bad):
    class Broken(QueryStrategy):
        def select(self, context, X, n):
            return bad

    X, y = blobs
    learner = skal.ActiveLearner(LogisticRegression(), strategy=Broken()).fit(X, y)
    with pytest.raises(RuntimeError, match="not 3 distinct row indices"):
        learner.query(X[:50], 3)


# ------------------------------------------------------------ determinism
@pytest.mark.parametrize("strategy", UNCERTAINTY)
def test_same_random_state_same_query(blobs, strategy, net_factory):
    X, y = blobs
    X0, y0, Xp, yp = _split(X, y)

    def run(seed):
        learner = skal.ActiveLearner(
            net_factory(), strategy=strategy, random_state=seed
        )
        learner.fit(X0, y0)
        first = learner.query(Xp, 10)
        learner.teach(Xp[first], yp[first])
        return first, learner.query(Xp, 10), learner.predict_proba(Xp)

    a, b = run(3), run(3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    if strategy == "random":
        assert not np.array_equal(a[0], run(4)[0])


def test_subset_size_scores_a_random_subset(blobs):
    X, y = blobs
    seen = []

    class Spy(QueryStrategy):
        def utility(self, context, Xc):
            seen.append(Xc.copy())
            return Xc[:, 0]

    learner = skal.ActiveLearner(
        LogisticRegression(), strategy=Spy(), subset_size=30, random_state=0
    ).fit(X[:50], y[:50])
    idx = learner.query(X, n=5)
    assert seen[-1].shape == (30, 4)
    # indices refer to the full pool and are the best of the candidate subset
    rows = [np.flatnonzero((X == r).all(axis=1))[0] for r in seen[-1]]
    assert set(idx) <= set(rows)
    best = np.array(rows)[np.argsort(-seen[-1][:, 0])[:5]]
    np.testing.assert_array_equal(idx, best)
    # a pool smaller than subset_size is scored whole
    learner.query(X[:20], n=5)
    assert seen[-1].shape == (20, 4)


def test_strategy_object_equals_name(blobs):
    X, y = blobs
    by_name = skal.ActiveLearner(LogisticRegression(), strategy="margin").fit(
        X[:60], y[:60]
    )
    by_obj = skal.ActiveLearner(
        LogisticRegression(), strategy=skal.strategies.MarginSampling()
    ).fit(X[:60], y[:60])
    np.testing.assert_array_equal(by_name.query(X, 20), by_obj.query(X, 20))


# --------------------------------------------------------------- pipelines
def test_pipeline_estimator_strategy_sees_transformed_pool(blobs, net_factory):
    X, y = blobs
    X = X * 100 + 7
    seen = {}

    class Spy(QueryStrategy):
        def utility(self, context, Xc):
            seen["pool"] = Xc
            seen["labeled"] = context.X_labeled
            return np.zeros(len(Xc))

    learner = skal.ActiveLearner(
        make_pipeline(StandardScaler(), net_factory()), strategy=Spy()
    ).fit(X[:100], y[:100])
    learner.query(X[100:], 3)
    scaler = learner.estimator_[0]
    np.testing.assert_allclose(seen["pool"], scaler.transform(X[100:]))
    np.testing.assert_allclose(seen["labeled"], scaler.transform(X[:100]))
    learner.teach(X[100:110], y[100:110])
    assert learner.score(X[200:], y[200:]) > 0.8


def test_learner_as_last_pipeline_step(blobs):
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), skal.ActiveLearner(LogisticRegression()))
    pipe.fit(X[:100], y[:100])
    assert pipe.score(X[100:], y[100:]) > 0.9
    learner = pipe[-1]
    idx = learner.query(pipe[:-1].transform(X[100:]), 5)
    assert len(set(idx)) == 5


# ------------------------------------------------------------- warm start
class _RecordStart(Callback):
    """Records the weights and optimizer state when each fit starts."""

    def initialize(self):
        self.starts = []
        return self

    def on_train_begin(self, net, **kwargs):
        weights = [p.detach().clone() for p in net.module_.parameters()]
        self.starts.append((weights, id(net.optimizer_), len(net.optimizer_.state)))


@pytest.mark.parametrize("warm_start", [True, False])
def test_teach_warm_start_keeps_weights_and_recreates_optimizer(blobs, warm_start):
    X, y = blobs
    rec = _RecordStart()
    net = make_net(
        module=skal.nets.MLP, module__in_features=4, callbacks=[("rec", rec)]
    )
    learner = skal.ActiveLearner(net, warm_start=warm_start, random_state=0)
    learner.fit(X[:60], y[:60])
    end_of_fit = [p.detach().clone() for p in learner.estimator_.module_.parameters()]
    module_before = learner.estimator_.module_
    learner.teach(X[60:80], y[60:80])
    starts = dict(learner.estimator_.callbacks_)["rec"].starts
    if warm_start:
        (w0, opt0, _), (w1, opt1, state1) = starts
        assert learner.estimator_.module_ is module_before
        for a, b in zip(w1, end_of_fit):  # training went on from the fitted weights
            assert (a == b).all()
        assert opt1 != opt0 and state1 == 0  # a fresh optimizer, no Adam moments
    else:
        w1 = starts[-1][0]
        assert learner.estimator_.module_ is not module_before
        assert any(not (a == b).all() for a, b in zip(w1, end_of_fit))
    assert learner.n_labeled_ == 80


def test_teach_refits_sklearn_estimator_on_all_labels(blobs):
    X, y = blobs
    learner = skal.ActiveLearner(LogisticRegression()).fit(X[:30], y[:30])
    learner.teach(X[30:90], y[30:90])
    reference = LogisticRegression().fit(X[:90], y[:90])
    np.testing.assert_allclose(
        learner.predict_proba(X), reference.predict_proba(X), rtol=1e-6
    )


# --------------------------------------------------- model selection tools
def test_grid_search_over_strategy_and_epochs(blobs):
    X, y = blobs
    learner = skal.ActiveLearner(make_net(), random_state=0)
    grid = GridSearchCV(
        learner,
        {"strategy": ["entropy", "margin"], "estimator__max_epochs": [2, 20]},
        cv=3,
    ).fit(X, y)
    assert grid.best_params_["estimator__max_epochs"] == 20
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_estimator_.estimator_.max_epochs == 20


def test_cross_val_score_and_clone(blobs):
    X, y = blobs
    learner = skal.ActiveLearner(make_net(), strategy="margin", random_state=0)
    scores = cross_val_score(learner, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85
    cloned = clone(learner)
    assert cloned.get_params()["strategy"] == "margin"
    assert not hasattr(cloned, "estimator_")


def test_pickle_round_trip_keeps_predictions_and_queries(blobs):
    X, y = blobs
    learner = skal.ActiveLearner(make_net(), strategy="random", random_state=0)
    learner.fit(X[:80], y[:80])
    restored = pickle.loads(pickle.dumps(learner))
    np.testing.assert_array_equal(restored.predict_proba(X), learner.predict_proba(X))
    np.testing.assert_array_equal(restored.query(X[80:], 7), learner.query(X[80:], 7))
    restored.teach(X[80:90], y[80:90])
    assert restored.n_labeled_ == 90


def test_registry_names_cover_uncertainty_baselines():
    assert set(UNCERTAINTY) <= set(get_strategy_names())
    a, b = (
        skal.strategies.get_strategy("entropy"),
        skal.strategies.get_strategy("entropy"),
    )
    assert a is not b
    obj = skal.strategies.MarginSampling()
    assert skal.strategies.get_strategy(obj) is obj


# ------------------------------------------------- learning-rate schedules
class _LrRecorder(Callback):
    """The optimizer's learning rate at the start of every epoch."""

    def initialize(self):
        self.lrs_ = []
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.lrs_.append(net.optimizer_.param_groups[0]["lr"])


@pytest.mark.parametrize(
    "scheduler, per_round",
    [
        (
            LRScheduler("MultiStepLR", milestones=[2], gamma=0.1),
            [0.1, 0.1, 0.1 * 0.1],
        ),
        (
            LRScheduler("CosineAnnealingLR", T_max=3),
            # eta_min + (lr - eta_min) (1 + cos(pi t / T_max)) / 2, t = 0, 1, 2
            [0.1 * (1 + np.cos(np.pi * t / 3)) / 2 for t in range(3)],
        ),
        (
            # a constant monitored value never improves: halve after each epoch
            LRScheduler(
                "ReduceLROnPlateau", monitor=lambda net: 1.0, patience=0, factor=0.5
            ),
            [0.1, 0.1, 0.05],
        ),
    ],
    ids=["MultiStepLR", "CosineAnnealingLR", "ReduceLROnPlateau"],
)
def test_lr_schedule_restarts_in_every_warm_started_round(blobs, scheduler, per_round):
    X, y = blobs
    net = make_net(
        optimizer=torch.optim.SGD,
        lr=0.1,
        max_epochs=3,
        callbacks=[scheduler, _LrRecorder()],
    )
    learner = skal.ActiveLearner(net, "margin", random_state=0).fit(X[:30], y[:30])
    for _ in range(2):
        idx = 30 + learner.query(X[30:], 10)
        learner.teach(X[idx], y[idx])
    lrs = dict(learner.estimator_.callbacks_)["_LrRecorder"].lrs_
    # fit, then two teach rounds: the schedule starts over in each
    np.testing.assert_allclose(lrs, per_round * 3, rtol=1e-12)
    assert len(learner.estimator_.history) == 9
