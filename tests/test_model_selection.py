"""Tests of skal.model_selection: simulation, oracle semantics, AULC,
model selection, parallel and distributed runs, checkpoints and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.naive_bayes import GaussianNB
from threadpoolctl import threadpool_limits

import skal
from skal.datasets import load_digits_images
from skal.model_selection import (
    ActiveLearningSimulation,
    active_learning_curve,
    aulc,
    aulc_scorer,
    compare_strategies,
    make_aulc_scorer,
)
from skal.model_selection._simulation import initial_indices
from skal.strategies import QueryStrategy, get_strategy, top_n
from tests.conftest import make_net

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Tiny problems: extra BLAS/torch threads only contend (35x slower on a
    busy 2-core machine)."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(torch_threads)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:360] / 16.0, y[:360]


@pytest.fixture(scope="module")
def digits_images():
    X, y = load_digits_images()
    return X[:300], y[:300]


def _lr_learner(strategy="margin"):
    return skal.ActiveLearner(LogisticRegression(max_iter=200), strategy)


def _net_learner(strategy="entropy", max_epochs=2):
    net = skal.NeuralNetClassifier(
        skal.nets.SmallCNN,
        module__channels=4,
        module__hidden=16,
        max_epochs=max_epochs,
        batch_size=32,
    )
    return skal.ActiveLearner(net, strategy)


# ---------------------------------------------------------------- AULC
def test_aulc_is_normalized_trapezoid():
    assert aulc([0, 10], [0.2, 0.4]) == pytest.approx(0.3)
    # uneven spacing weighs intervals by their width
    assert aulc([0, 10, 40], [0.0, 1.0, 1.0]) == pytest.approx((5 + 30) / 40)
    assert aulc([5, 6, 7], [1.0, 1.0, 1.0]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "n_labeled, scores, match",
    [
        ([10], [0.5], "at least two"),
        ([10, 10], [0.5, 0.6], "strictly increasing"),
        ([10, 20], [0.5, 0.6, 0.7], "must have shape"),
    ],
)
def test_aulc_rejects_bad_input(n_labeled, scores, match):
    with pytest.raises(ValueError, match=match):
        aulc(n_labeled, scores)


# ------------------------------------------------------- initial sets
@pytest.mark.parametrize("initial", ["random", "stratified"])
def test_initial_set_has_every_class(initial):
    y = np.repeat(np.arange(5), [200, 50, 20, 5, 1])
    for seed in range(20):
        idx = initial_indices(y, 10, initial, np.random.RandomState(seed))
        assert len(np.unique(idx)) == 10
        assert set(y[idx]) == set(range(5))
    idx = initial_indices(y, 40, "stratified", np.random.RandomState(0))
    counts = np.bincount(y[idx], minlength=5)
    assert counts.sum() == 40 and counts.min() >= 1
    # proportional: 200/276 * 40 = 29
    assert counts[0] == 29


def test_initial_set_too_small_for_classes(digits):
    X, y = digits
    with pytest.raises(ValueError, match="at least one sample per class"):
        active_learning_curve(_lr_learner(), X, y, cv=2, n_initial=5, n_rounds=1)


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"n_initial": 0}, ValueError, r"'n_initial' .* an int in \[1, inf\); got 0"),
        ({"query_size": 2.5}, TypeError, "'query_size' .* got 2.5 of type float"),
        ({"n_rounds": -1}, ValueError, r"'n_rounds' .* an int in \[0, inf\); got -1"),
        ({"initial": "first"}, ValueError, "'initial' .* one of .*; got 'first'"),
        ({"n_rounds": 100, "query_size": 10}, ValueError, "labels are needed"),
        ({"n_seeds": 0}, ValueError, r"'n_seeds' .* an int in \[1, inf\); got 0"),
    ],
)
def test_curve_validates_parameters(digits, params, error, match):
    X, y = digits
    with pytest.raises(error, match=match):
        active_learning_curve(_lr_learner(), X, y, cv=2, **params)


def test_learner_must_be_an_active_learner(digits):
    X, y = digits
    with pytest.raises(TypeError, match="learner must be a skal.ActiveLearner"):
        active_learning_curve(LogisticRegression(), X, y, cv=2)
    with pytest.raises(TypeError, match="learner must be a skal.ActiveLearner"):
        ActiveLearningSimulation(LogisticRegression()).fit(X, y)


# ------------------------------------------------------ curves
def test_curve_shapes_queries_and_reproducibility(digits):
    X, y = digits
    kw = dict(cv=3, n_initial=20, query_size=15, n_rounds=3, n_seeds=2)
    n_labeled, scores, queried = active_learning_curve(
        _lr_learner(), X, y, random_state=0, return_queried=True, **kw
    )
    assert n_labeled.tolist() == [20, 35, 50, 65]
    assert scores.shape == (6, 4) and queried.shape == (6, 65)
    assert ((scores >= 0) & (scores <= 1)).all()
    # accuracy grows with labels on digits
    assert (scores[:, -1] > scores[:, 0]).mean() > 0.5
    from sklearn.model_selection import StratifiedKFold

    for row, q in enumerate(queried):
        train, _ = list(StratifiedKFold(3).split(X, y))[row // 2]
        assert len(np.unique(q)) == len(q)  # no row labelled twice
        assert np.isin(q, train).all()
    # the two seeds of one split differ, and a rerun is identical
    assert not np.array_equal(queried[0], queried[1])
    again = active_learning_curve(_lr_learner(), X, y, random_state=0, **kw)
    np.testing.assert_array_equal(again[1], scores)


class Spy(QueryStrategy):
    """Random selection that records what it is shown."""

    calls: list = []

    def select(self, context, X, n):
        Spy.calls.append(
            {
                "pool": np.rint(X[:, 0] * 1000).astype(int),
                "labeled": np.rint(context.X_labeled[:, 0] * 1000).astype(int),
                "n_y": len(context.y_labeled),
                "n_y_learner": context.learner.n_labeled_,
            }
        )
        return top_n(
            context.random_state.random_sample(len(X)), n, context.random_state
        )


def test_strategy_sees_only_pool_rows_and_queried_labels(digits):
    X, y = digits
    ids = np.arange(len(X))
    X_id = np.column_stack([ids / 1000.0, X])  # row id readable by the spy
    Spy.calls.clear()
    n_initial, query_size, n_rounds = 12, 8, 4
    n_labeled, scores, queried = active_learning_curve(
        skal.ActiveLearner(LogisticRegression(max_iter=100), Spy()),
        X_id,
        y,
        cv=2,
        n_initial=n_initial,
        query_size=query_size,
        n_rounds=n_rounds,
        n_seeds=2,
        random_state=1,
        return_queried=True,
    )
    from sklearn.model_selection import StratifiedKFold

    folds = list(StratifiedKFold(2).split(X, y))
    assert len(Spy.calls) == 2 * 2 * n_rounds
    for i, call in enumerate(Spy.calls):
        run, r = divmod(i, n_rounds)
        train, test = folds[run // 2]
        expected = n_initial + r * query_size
        assert call["n_y"] == expected == call["n_y_learner"]
        # labels known are exactly those of the rows labelled so far
        np.testing.assert_array_equal(
            np.sort(call["labeled"]), np.sort(queried[run][:expected])
        )
        assert not np.isin(call["pool"], test).any()  # never a test row
        assert not np.isin(call["pool"], call["labeled"]).any()
        np.testing.assert_array_equal(
            np.sort(np.concatenate([call["pool"], call["labeled"]])), np.sort(train)
        )


def test_unqueried_labels_cannot_change_anything(digits):
    """Scrambling the labels of pool rows never queried changes nothing.

    Three classes, so that the first random initial draw holds all of them
    and no other label is read to draw the initial set.
    """
    X, y = digits
    X, y = X[y < 3], y[y < 3]
    train, test = np.arange(70), np.arange(70, len(y))
    kw = dict(
        cv=[(train, test)], n_initial=12, query_size=10, n_rounds=4, n_seeds=3,
        random_state=0, return_queried=True,
    )  # fmt: skip
    _, scores, queried = active_learning_curve(_lr_learner("entropy"), X, y, **kw)
    hidden = np.setdiff1d(train, queried.ravel())
    assert len(hidden) > 5
    y_scrambled = y.copy()
    y_scrambled[hidden] = (y[hidden] + 1) % 3
    assert (y_scrambled[hidden] != y[hidden]).any()
    _, scores2, queried2 = active_learning_curve(
        _lr_learner("entropy"), X, y_scrambled, **kw
    )
    np.testing.assert_array_equal(queried2, queried)
    np.testing.assert_array_equal(scores2, scores)


# ---------------------------------------------------- parallel
def test_n_jobs_gives_the_same_result(digits):
    X, y = digits
    kw = dict(cv=2, n_initial=20, query_size=10, n_rounds=2, n_seeds=2, random_state=3)
    serial = active_learning_curve(_lr_learner(), X, y, n_jobs=1, **kw)
    parallel = active_learning_curve(_lr_learner(), X, y, n_jobs=2, **kw)
    np.testing.assert_array_equal(serial[1], parallel[1])


def test_dask_backend_gives_the_same_result(digits):
    distributed = pytest.importorskip("dask.distributed")
    import joblib

    X, y = digits
    kw = dict(cv=2, n_initial=20, query_size=10, n_rounds=2, n_seeds=2, random_state=3)
    serial = active_learning_curve(_lr_learner(), X, y, **kw)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
        joblib.parallel_backend("dask"),
    ):
        n_labeled, scores = active_learning_curve(_lr_learner(), X, y, n_jobs=-1, **kw)
        ran_on = client.run(os.getpid)
    assert len(ran_on) == 2
    np.testing.assert_array_equal(scores, serial[1])
    np.testing.assert_array_equal(n_labeled, serial[0])


# ------------------------------------------------ model selection
def test_grid_search_chooses_strategy_by_aulc(digits):
    X, y = digits
    sim = ActiveLearningSimulation(
        _lr_learner(), n_initial=20, query_size=10, n_rounds=3, random_state=0
    )
    search = GridSearchCV(
        sim, {"learner__strategy": ["random", "margin", "entropy"]}, cv=2
    ).fit(X, y)
    means = search.cv_results_["mean_test_score"]
    assert ((means > 0) & (means < 1)).all()
    assert (
        search.best_params_["learner__strategy"]
        == ["random", "margin", "entropy"][int(np.argmax(means))]
    )
    best = search.best_estimator_
    assert best.learner_.strategy == search.best_params_["learner__strategy"]
    assert best.learner_.n_labeled_ == 50
    assert len(np.unique(best.labeled_indices_)) == 50


def test_simulation_score_is_aulc_of_held_out_curve(digits):
    X, y = digits
    X_tr, y_tr, X_te, y_te = X[:240], y[:240], X[240:], y[240:]
    sim = ActiveLearningSimulation(
        _lr_learner(), n_initial=20, query_size=10, n_rounds=3, random_state=0
    ).fit(X_tr, y_tr)
    curve = sim.learning_curve(X_te, y_te)
    assert curve.shape == (4,)
    # each round's model: refit on the labelled prefix reproduces its score
    for r, n in enumerate(sim.n_labeled_):
        rows = sim.labeled_indices_[:n]
        ref = LogisticRegression(max_iter=200).fit(X_tr[rows], y_tr[rows])
        assert curve[r] == pytest.approx(ref.score(X_te, y_te))
    assert sim.score(X_te, y_te) == pytest.approx(aulc(sim.n_labeled_, curve))
    assert aulc_scorer(sim, X_te, y_te) == pytest.approx(sim.score(X_te, y_te))
    f1 = make_aulc_scorer("f1_macro")(sim, X_te, y_te)
    assert 0 < f1 < 1 and f1 != pytest.approx(sim.score(X_te, y_te))
    assert sim.predict(X_te).shape == (120,)
    res = cross_validate(
        sim, X, y, cv=2, scoring={"aulc": aulc_scorer, "final": "accuracy"}
    )
    assert (res["test_aulc"] > 0).all() and (res["test_final"] > 0).all()


def test_simulation_with_network_keeps_each_rounds_model(digits_images, capsys):
    X, y = digits_images
    sim = ActiveLearningSimulation(
        _net_learner(max_epochs=5),
        n_initial=20,
        query_size=10,
        n_rounds=2,
        random_state=0,
        verbose=2,
    ).fit(X[:200], y[:200])
    err = capsys.readouterr().err
    assert "rounds" in err and "round 2: pool" in err and "batch" in err
    final = sim.learner_.score(X[200:], y[200:])
    curve = sim.learning_curve(X[200:], y[200:])
    assert curve.shape == (3,)
    # the last snapshot is the final model, which scoring the curve left intact
    assert curve[-1] == pytest.approx(final)
    assert sim.learner_.score(X[200:], y[200:]) == pytest.approx(final)
    # round 0's model is the initial fit: a fresh learner on the initial rows
    rows = sim.labeled_indices_[:20]
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    learner_seed = np.random.RandomState(seed).randint(np.iinfo(np.int32).max)
    initial = _net_learner(max_epochs=5).set_params(
        random_state=learner_seed, classes=np.arange(10)
    )
    initial.fit(X[:200][rows], y[:200][rows])
    assert curve[0] == pytest.approx(initial.score(X[200:], y[200:]))


# --------------------------------------------------- comparison
def test_compare_strategies_table_plot_and_skips(digits, tmp_path):
    X, y = digits

    class NeedsNet(QueryStrategy):
        def utility(self, context, X):
            context.net("needs_net")

    with pytest.warns(UserWarning, match="needs_net"):
        result = compare_strategies(
            _lr_learner(),
            X,
            y,
            {"random": "random", "margin": "margin", "needs_net": NeedsNet()},
            errors="warn",
            cv=2,
            n_initial=20,
            query_size=10,
            n_rounds=2,
            n_seeds=2,
            random_state=0,
        )
    assert set(result.scores) == {"random", "margin"}
    assert "needs a neural network" in result.skipped["needs_net"]
    table = result.table()
    assert list(table["strategy"]) == sorted(
        result.scores, key=lambda s: -aulc(result.n_labeled, result.scores[s]).mean()
    )
    row = table.set_index("strategy").loc["margin"]
    areas = aulc(result.n_labeled, result.scores["margin"])
    assert row["aulc_mean"] == pytest.approx(areas.mean())
    assert row["aulc_std"] == pytest.approx(areas.std())
    assert row["final_mean"] == pytest.approx(result.scores["margin"][:, -1].mean())
    assert row["n_runs"] == 4
    text = result.to_string()
    assert "±" in text and "skipped" in text
    path = tmp_path / "curves.png"
    ax = result.plot(path, title="digits")
    assert path.stat().st_size > 1000
    assert len(ax.collections) == 2  # one std band per strategy
    with pytest.raises(TypeError, match="needs a neural network"):
        compare_strategies(
            _lr_learner(), X, y, [NeedsNet()], cv=2, n_initial=20, n_rounds=1
        )


def test_compare_strategies_pairs_entries_on_splits_seeds_and_initial_sets(digits):
    X, y = digits
    # A shuffling splitter without a random_state gives new splits on every
    # call: identical entries only agree if the splits are drawn once.
    cv = StratifiedKFold(n_splits=2, shuffle=True)
    kw = dict(n_initial=20, query_size=10, n_rounds=2, n_seeds=2, random_state=3)
    result = compare_strategies(
        {"a": _lr_learner("random"), "b": _lr_learner("random"),
         "margin": _lr_learner("margin")},
        X, y, cv=cv, **kw,
    )  # fmt: skip
    np.testing.assert_array_equal(result.scores["a"], result.scores["b"])
    np.testing.assert_array_equal(result.queried["a"], result.queried["b"])
    initial = result.queried["a"][:, :20]
    np.testing.assert_array_equal(result.queried["margin"][:, :20], initial)
    assert not np.array_equal(result.queried["margin"], result.queried["a"])
    assert not np.array_equal(initial[0], initial[1])  # seeds differ


def test_compare_strategies_runs_each_entry_with_its_own_estimator(digits):
    X, y = digits
    splits = list(StratifiedKFold(n_splits=2).split(X, y))
    kw = dict(n_initial=20, query_size=10, n_rounds=2, n_seeds=2, random_state=0)
    learners = {
        "lr": _lr_learner("margin"),
        "nb": skal.ActiveLearner(GaussianNB(), "margin"),
        "template": "entropy",
    }
    with pytest.raises(ValueError, match="strategies must be None"):
        compare_strategies(learners, X, y, ["margin"], cv=splits, **kw)
    with pytest.raises(TypeError, match=r"learner\['template'\] must be"):
        compare_strategies(learners, X, y, cv=splits, **kw)
    # a mapping of strategies may mix learners with strategies for the template
    result = compare_strategies(
        skal.ActiveLearner(GaussianNB()), X, y, learners, cv=splits, **kw
    )
    for name, learner in [
        ("lr", _lr_learner("margin")),
        ("nb", skal.ActiveLearner(GaussianNB(), "margin")),
        ("template", skal.ActiveLearner(GaussianNB(), "entropy")),
    ]:
        _, expected, rows = active_learning_curve(
            learner, X, y, cv=splits, return_queried=True, **kw
        )
        np.testing.assert_array_equal(result.scores[name], expected)
        np.testing.assert_array_equal(result.queried[name], rows)
    assert not np.array_equal(result.scores["lr"], result.scores["nb"])
    np.testing.assert_array_equal(
        result.queried["lr"][:, :20], result.queried["nb"][:, :20]
    )
    with pytest.raises(ValueError, match="no learner template"):
        compare_strategies(None, X, y, ["margin"], cv=splits, **kw)
    with pytest.raises(TypeError, match="return_queried"):
        compare_strategies(
            _lr_learner(), X, y, ["margin"], cv=splits, return_queried=True
        )


def test_compare_strategies_gives_each_strategy_the_network_it_needs(digits_images):
    X, y = digits_images
    head = dict(tidal_layers=["features.1", "features.3"])
    small = dict(module__channels=4, module__hidden=16, max_epochs=2, batch_size=32)
    tidal_net = skal.TiDALClassifier(skal.nets.SmallCNN, **head, **small)
    result = compare_strategies(
        {
            "tidal": skal.ActiveLearner(tidal_net, "tidal"),
            "entropy": _net_learner("entropy"),
        },
        X, y, cv=[(np.arange(200), np.arange(200, 300))],
        n_initial=20, query_size=10, n_rounds=1, random_state=0,
    )  # fmt: skip
    assert set(result.scores) == {"tidal", "entropy"} and not result.skipped
    np.testing.assert_array_equal(
        result.queried["tidal"][:, :20], result.queried["entropy"][:, :20]
    )
    with pytest.raises(TypeError, match="TiDALClassifier"):
        compare_strategies(
            _net_learner(), X, y, ["tidal"],
            cv=[(np.arange(200), np.arange(200, 300))],
            n_initial=20, query_size=10, n_rounds=1,
        )  # fmt: skip


def test_verbose_shows_progress_and_default_is_silent(digits, capsys):
    X, y = digits
    kw = dict(cv=2, n_initial=20, query_size=10, n_rounds=2, random_state=0)
    active_learning_curve(_lr_learner(), X, y, **kw)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    active_learning_curve(_lr_learner(), X, y, verbose=2, **kw)
    err = capsys.readouterr().err
    assert "active-learning runs" in err and "split 1 seed 0" in err


# ------------------------------------------------- checkpoints
FAIL = {"at": None}


class Interrupting(QueryStrategy):
    """Entropy sampling that raises at its FAIL["at"]-th call; counts calls."""

    def select(self, context, X, n):
        self.n_calls_ = getattr(self, "n_calls_", 0) + 1
        if FAIL["at"] is not None and self.n_calls_ == FAIL["at"]:
            raise KeyboardInterrupt("simulated interruption")
        return get_strategy("entropy").select(context, X, n)


@pytest.mark.parametrize("kind", ["logistic", "network"])
def test_resume_after_interruption_is_identical(kind, digits, digits_images, tmp_path):
    X, y = digits if kind == "logistic" else digits_images
    make = _lr_learner if kind == "logistic" else _net_learner
    kw = dict(
        cv=[(np.arange(200), np.arange(200, 300))], n_initial=20, query_size=10,
        n_rounds=5, n_seeds=2, random_state=0, return_queried=True,
    )  # fmt: skip
    FAIL["at"] = None
    _, ref_scores, ref_queried = active_learning_curve(make(Interrupting()), X, y, **kw)
    FAIL["at"] = 3
    try:
        with pytest.raises(KeyboardInterrupt):
            active_learning_curve(
                make(Interrupting()), X, y, checkpoint_dir=tmp_path, **kw
            )
    finally:
        FAIL["at"] = None
    (run_dir,) = tmp_path.iterdir()  # first run interrupted, second not started
    state = json.loads((run_dir / "state.json").read_text())
    assert state["round"] == 2 and state["n_labeled"] == 40
    assert len(state["scores"]) == 3
    if kind == "network":
        weights = torch.load(run_dir / state["weights"], weights_only=True)
        assert "module" in weights
    _, scores, queried = active_learning_curve(
        make(Interrupting()), X, y, checkpoint_dir=tmp_path, **kw
    )
    np.testing.assert_array_equal(queried, ref_queried)
    np.testing.assert_array_equal(scores, ref_scores)
    for q in queried:  # no label lost or counted twice
        assert len(q) == len(np.unique(q)) == 70
    assert len(list(tmp_path.iterdir())) == 2
    # a finished run is read back, not recomputed
    _, again, _ = active_learning_curve(
        make(Interrupting()), X, y, checkpoint_dir=tmp_path, **kw
    )
    np.testing.assert_array_equal(again, ref_scores)


def test_simulation_resumes_models_and_strategy_state(digits_images, tmp_path):
    X, y = digits_images
    X_tr, y_tr, X_te, y_te = X[:200], y[:200], X[200:], y[200:]
    kw = dict(n_initial=20, query_size=10, n_rounds=4, random_state=0)
    ref = ActiveLearningSimulation(_net_learner(Interrupting()), **kw).fit(X_tr, y_tr)
    FAIL["at"] = 2
    sim = ActiveLearningSimulation(
        _net_learner(Interrupting()), checkpoint_dir=tmp_path, **kw
    )
    try:
        with pytest.raises(KeyboardInterrupt):
            sim.fit(X_tr, y_tr)
    finally:
        FAIL["at"] = None
    sim.fit(X_tr, y_tr)
    np.testing.assert_array_equal(sim.labeled_indices_, ref.labeled_indices_)
    np.testing.assert_allclose(
        sim.learning_curve(X_te, y_te), ref.learning_curve(X_te, y_te)
    )
    assert sim.learner_.n_labeled_ == 60
    # the strategy's call counter survived the interruption
    assert sim.learner_.strategy_.n_calls_ == ref.learner_.strategy_.n_calls_ == 4


_KILL_SCRIPT = """
import sys
import numpy as np
import skal
from skal.datasets import load_digits_images
from skal.model_selection import active_learning_curve

X, y = load_digits_images()
net = skal.NeuralNetClassifier(
    skal.nets.SmallCNN, module__channels=4, module__hidden=16, max_epochs=10,
    batch_size=32,
)
active_learning_curve(
    skal.ActiveLearner(net, sys.argv[2]), X[:300], y[:300],
    cv=[(np.arange(200), np.arange(200, 300))], n_initial=20, query_size=10,
    n_rounds=8, random_state=0, checkpoint_dir=sys.argv[1],
)
"""


@pytest.mark.parametrize("strategy", ["margin", "albl"])
def test_resume_after_sigkill(tmp_path, strategy):
    """Kill a run with SIGKILL mid-way; resuming gives the uninterrupted result
    (ALBL: with the bandit's arms, histories and weights restored)."""
    X, y = load_digits_images()
    X, y = X[:300], y[:300]
    net = skal.NeuralNetClassifier(
        skal.nets.SmallCNN, module__channels=4, module__hidden=16, max_epochs=10,
        batch_size=32,
    )  # fmt: skip
    kw = dict(
        cv=[(np.arange(200), np.arange(200, 300))], n_initial=20, query_size=10,
        n_rounds=8, random_state=0, return_queried=True,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(tmp_path), strategy],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    state = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            states = list(tmp_path.glob("*/state.json"))
            if states:
                try:
                    state = json.loads(states[0].read_text())
                except ValueError:  # pragma: no cover - replaced atomically
                    state = None
                if state and state["round"] >= 2:
                    break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = json.loads(next(tmp_path.glob("*/state.json")).read_text())
    assert 2 <= state["round"] < 8, "the run was not interrupted mid-way"
    learner = skal.ActiveLearner(net, strategy)
    _, scores, queried = active_learning_curve(
        learner, X, y, checkpoint_dir=tmp_path, **kw
    )
    _, ref_scores, ref_queried = active_learning_curve(learner, X, y, **kw)
    np.testing.assert_array_equal(queried, ref_queried)
    np.testing.assert_array_equal(scores, ref_scores)
    assert len(np.unique(queried)) == 100


# ----------------------------------------------- digests of Datasets, memmaps
def _dataset_digest(ds, y=None):
    from skal._data import DatasetOracle
    from skal.model_selection._simulation import data_digest

    return data_digest(ds, DatasetOracle(ds) if y is None else y)


def test_dataset_digest_covers_its_items():
    """Defect 6: a Dataset's digest covers its inputs and labels (it covered
    its class and length only, so any Dataset of the same size matched)."""
    from torch.utils.data import TensorDataset

    from skal.model_selection._simulation import DIGEST_ITEMS

    rng = np.random.RandomState(0)
    x = torch.from_numpy(rng.rand(50, 1, 4, 4).astype(np.float32))
    y = torch.arange(50) % 2
    a = _dataset_digest(TensorDataset(x, y))
    assert a == _dataset_digest(TensorDataset(x.clone(), y.clone()))
    assert a != _dataset_digest(TensorDataset(x + 1, y))  # other inputs
    assert a != _dataset_digest(TensorDataset(x, 1 - y))  # other labels
    inputs_only = TensorDataset(x)  # labels given as y beside the items
    assert _dataset_digest(inputs_only, y.numpy()) != _dataset_digest(
        inputs_only, 1 - y.numpy()
    )
    # a large Dataset: a sample of its items, the same positions every time
    big = torch.zeros(DIGEST_ITEMS + 500, 3)
    labels = torch.zeros(len(big), dtype=torch.long)
    changed = big.clone()
    changed[::10] = 1.0  # 150 items: a sample of 1,000 of 1,500 sees some
    assert _dataset_digest(TensorDataset(big, labels)) == _dataset_digest(
        TensorDataset(big.clone(), labels)
    )
    assert _dataset_digest(TensorDataset(big, labels)) != _dataset_digest(
        TensorDataset(changed, labels)
    )


def test_checkpoint_of_another_dataset_is_not_read_back(tmp_path):
    """Defect 6: a Dataset of the same size as one run before gets its own
    runs, not the first one's curve read back from checkpoint_dir."""
    from torch.utils.data import TensorDataset

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    first = TensorDataset(torch.from_numpy(X[:120]), torch.from_numpy(y[:120]))
    second = TensorDataset(torch.from_numpy(X[120:240]), torch.from_numpy(y[120:240]))

    def simulate(ds, directory):
        learner = skal.ActiveLearner(make_net(max_epochs=2), classes=list(range(10)))
        sim = ActiveLearningSimulation(
            learner, n_initial=20, query_size=10, n_rounds=1, random_state=0,
            checkpoint_dir=directory,
        )  # fmt: skip
        return sim.fit(ds).labeled_indices_, sim.learner_.predict_proba(ds)

    simulate(first, tmp_path)
    order, proba = simulate(second, tmp_path)
    fresh_order, fresh_proba = simulate(second, None)
    np.testing.assert_array_equal(order, fresh_order)
    np.testing.assert_allclose(proba, fresh_proba, rtol=1e-6, atol=1e-7)


class RandomItems(torch.utils.data.Dataset):
    """Items drawn anew at every read (a random transform inside a Dataset)."""

    def __len__(self):
        return 20

    def __getitem__(self, i):
        return torch.rand(3), i % 2


def test_dataset_with_random_items_warns_that_runs_are_not_resumed():
    with pytest.warns(UserWarning, match="differs between two reads"):
        _dataset_digest(RandomItems())


def test_simulation_does_not_copy_a_memmap_pool(tmp_path):
    """Defect 17: each round's pool of a memory-mapped array is read batch by
    batch; the pool was copied whole (X[pool]) at every round."""
    import tracemalloc

    rng = np.random.RandomState(0)
    path = tmp_path / "pool.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(3000, 1024))
    X[:] = rng.randint(0, 256, size=X.shape)
    X.flush()
    X = np.load(path, mmap_mode="r")
    y = (np.asarray(X[:, 0]) > 127).astype(int)
    net = skal.NeuralNetClassifier(
        skal.nets.MLP, module__hidden_units=(8,), max_epochs=1, batch_size=64
    )
    sim = ActiveLearningSimulation(
        skal.ActiveLearner(net, classes=[0, 1]),
        n_initial=20, query_size=10, n_rounds=2, random_state=0,
    )  # fmt: skip
    sim.fit(X, y)  # imports and caches: not the loop's memory
    tracemalloc.start()
    try:
        sim.fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 2, (peak, X.nbytes)
