"""Stopping criteria: their statistics against independent references, their
windows and thresholds, the loop helpers, and the simulated evaluation."""

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.metrics import cohen_kappa_score, f1_score
from sklearn.naive_bayes import GaussianNB
from torch.utils.data import TensorDataset

import skal
from skal.model_selection import (
    StoppingEvaluation,
    active_learning_curve,
    evaluate_stopping,
)
from skal.stopping import (
    Budget,
    ClassificationChange,
    DeltaF,
    MaxConfidence,
    OverallUncertainty,
    StabilizingPredictions,
    StoppingCriterion,
    cohen_kappa,
    delta_f,
    should_stop,
)
from tests.conftest import make_net


class Scripted(BaseEstimator):
    """A 'fitted learner' whose predictions are set by the test.

    ``X`` holds row ids in its first column; ``proba[row]`` is returned.
    """

    def __init__(self, proba, n_labeled=10):
        self.proba = proba
        self.n_labeled = n_labeled

    def fit(self, X=None, y=None):
        return self

    def __sklearn_is_fitted__(self):
        return True

    @property
    def classes_(self):
        return np.arange(self.proba.shape[1])

    @property
    def n_labeled_(self):
        return self.n_labeled

    def predict_proba(self, X):
        Scripted.calls += 1
        return self.proba[np.asarray(X)[:, 0].astype(int)]


Scripted.calls = 0


def onehot(labels, n_classes):
    return np.eye(n_classes)[np.asarray(labels)]


ROWS = np.arange(40)[:, None]


# ------------------------------------------------------------ statistics
def test_cohen_kappa_matches_sklearn():
    rng = np.random.RandomState(0)
    for _ in range(20):
        a, b = rng.randint(4, size=50), rng.randint(4, size=50)
        b[:30] = a[:30]
        assert cohen_kappa(a, b, 4) == pytest.approx(cohen_kappa_score(a, b))
    # one class everywhere: perfect agreement (sklearn gives NaN)
    assert cohen_kappa([2, 2, 2], [2, 2, 2], 3) == 1.0


def test_delta_f_is_one_minus_f1_against_the_previous_model():
    rng = np.random.RandomState(1)
    prev, cur = rng.randint(3, size=60), rng.randint(3, size=60)
    expected = np.mean([1 - f1_score(prev == k, cur == k) for k in range(3)])
    assert delta_f(prev, cur, 3) == pytest.approx(expected)
    # binary: the positive class only, as in the paper
    prev, cur = rng.randint(2, size=60), rng.randint(2, size=60)
    assert delta_f(prev, cur, 2) == pytest.approx(1 - f1_score(prev, cur))
    assert delta_f([0, 0], [0, 0], 2) == 0.0


@pytest.mark.parametrize(
    "measure, reference",
    [
        ("entropy", lambda p: -(p * np.log(p)).sum(1) / np.log(3)),
        ("least_confidence", lambda p: (1 - p.max(1)) * 3 / 2),
        ("margin", lambda p: 1 - (np.sort(p, 1)[:, -1] - np.sort(p, 1)[:, -2])),
    ],
)
def test_uncertainty_criteria_use_mean_and_max_of_the_measure(measure, reference):
    rng = np.random.RandomState(0)
    proba = rng.dirichlet(np.ones(3), size=40)
    learner = Scripted(proba)
    expected = reference(proba)
    overall = OverallUncertainty(threshold=0.5, measure=measure)
    overall.update(learner, ROWS)
    assert overall.value_ == pytest.approx(expected.mean())
    assert overall.should_stop() == (expected.mean() <= 0.5)
    worst = MaxConfidence(threshold=expected.max(), measure=measure)
    worst.update(learner, ROWS)
    assert worst.value_ == pytest.approx(expected.max())
    assert worst.should_stop()  # at the threshold exactly: stop
    lower = MaxConfidence(threshold=expected.max() - 1e-6, measure=measure)
    assert not lower.update(learner, ROWS).should_stop()
    assert "largest" in lower.reason_ and ">" in lower.reason_


# ---------------------------------------------------- windows and versions
def _labels_sequence(n_rounds, changes, n_classes=3, seed=0):
    """Predictions per round: round r changes ``changes[r]`` rows."""
    rng = np.random.RandomState(seed)
    labels = [rng.randint(n_classes, size=len(ROWS))]
    for k in changes:
        nxt = labels[-1].copy()
        rows = rng.choice(len(ROWS), k, replace=False)
        nxt[rows] = (nxt[rows] + 1) % n_classes
        labels.append(nxt)
    return labels[: n_rounds + 1]


def test_stabilizing_predictions_averages_kappa_over_the_window():
    changes = [20, 2, 0, 0, 1, 0]
    labels = _labels_sequence(len(changes), changes)
    kappas = [cohen_kappa_score(a, b) for a, b in zip(labels, labels[1:])]
    criterion = StabilizingPredictions(threshold=0.95, window_size=3)
    decisions = []
    for r, lab in enumerate(labels):
        criterion.update(Scripted(onehot(lab, 3), n_labeled=10 + r), ROWS)
        decisions.append(criterion.should_stop())
    means = [np.mean(kappas[i - 2 : i + 1]) for i in range(2, len(kappas))]
    expected = [False] * 3 + [m >= 0.95 for m in means]
    assert decisions == expected
    assert criterion.value_ == pytest.approx(means[-1])
    assert np.isnan(criterion.history_[:3]).all()
    assert f"{means[-1]:.4f}" in criterion.reason_


def test_an_update_with_the_same_version_changes_nothing():
    labels = _labels_sequence(2, [5, 0])
    criterion = ClassificationChange()
    criterion.update(Scripted(onehot(labels[0], 3), n_labeled=10), ROWS)
    criterion.update(Scripted(onehot(labels[1], 3), n_labeled=20), ROWS)
    assert criterion.value_ == pytest.approx(5 / 40)
    # same labelled count: the same model, no new comparison
    criterion.update(Scripted(onehot(labels[1], 3), n_labeled=20), ROWS)
    assert criterion.n_updates_ == 2 and not criterion.should_stop()
    # an explicit version overrides the count
    criterion.update(Scripted(onehot(labels[1], 3), n_labeled=20), ROWS, version="b")
    assert criterion.n_updates_ == 3 and criterion.should_stop()


def test_stop_set_is_drawn_once_reproducibly():
    proba = onehot(np.arange(40) % 3, 3)
    a = StabilizingPredictions(stop_set_size=10, random_state=0)
    b = StabilizingPredictions(stop_set_size=10, random_state=0)
    a.update(Scripted(proba), ROWS)
    b.update(Scripted(proba), ROWS)
    np.testing.assert_array_equal(a.X_stop_, b.X_stop_)
    assert a.X_stop_.shape == (10, 1) and len(np.unique(a.X_stop_)) == 10
    first = a.X_stop_
    a.update(Scripted(proba, n_labeled=20), ROWS[20:])  # the pool shrank
    assert a.X_stop_ is first
    full = StabilizingPredictions(stop_set_size=None).update(Scripted(proba), ROWS)
    np.testing.assert_array_equal(full.X_stop_, ROWS)


def test_delta_f_needs_window_size_successive_rounds_below_threshold():
    changes = [0, 0, 8, 0, 0, 0]
    labels = _labels_sequence(len(changes), changes)
    criterion = DeltaF(threshold=0.01, window_size=2, stop_set_size=None)
    decisions = [
        criterion.update(Scripted(onehot(lab, 3), n_labeled=r), ROWS).should_stop()
        for r, lab in enumerate(labels)
    ]
    # deltas: -, 0, 0, big, 0, 0, 0
    assert decisions == [False, False, True, False, False, True, True]
    assert criterion.deltas_[2] > 0.01


def test_budget_counts_labels_and_rounds():
    proba = onehot(np.zeros(40, int), 2)
    labels = Budget(max_labels=30)
    rounds = Budget(max_rounds=2)
    got = []
    for n in (10, 20, 30):
        learner = Scripted(proba, n_labeled=n)
        got.append(
            (labels.update(learner, ROWS).stop_, rounds.update(learner, ROWS).stop_)
        )
    assert got == [(False, False), (False, False), (True, True)]
    assert rounds.reason_ == "Budget: 2 rounds >= max_rounds=2"
    with pytest.raises(ValueError, match="needs max_labels or max_rounds"):
        Budget().update(Scripted(proba), ROWS)


def test_empty_pool_stops_pool_criteria_only():
    proba = onehot(np.zeros(40, int), 2)
    empty = ROWS[:0]
    criterion = OverallUncertainty().update(Scripted(proba), empty)
    assert criterion.should_stop() and "no unlabelled rows" in criterion.reason_
    budget = Budget(max_labels=100).update(Scripted(proba), empty)
    assert not budget.should_stop()


# ------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "criterion, param, error",
    [
        (StabilizingPredictions(threshold="high"), "threshold", TypeError),
        (StabilizingPredictions(threshold=1.5), "threshold", ValueError),
        (StabilizingPredictions(window_size=0), "window_size", ValueError),
        (StabilizingPredictions(window_size=2.5), "window_size", TypeError),
        (StabilizingPredictions(stop_set_size=0), "stop_set_size", ValueError),
        (OverallUncertainty(threshold=-0.1), "threshold", ValueError),
        (OverallUncertainty(measure="variance"), "measure", ValueError),
        (MaxConfidence(threshold=None), "threshold", TypeError),
        (ClassificationChange(threshold=2), "threshold", ValueError),
        (DeltaF(threshold=0.0), "threshold", ValueError),
        (DeltaF(random_state="seed"), "random_state", TypeError),
        (Budget(max_labels=0), "max_labels", ValueError),
        (Budget(max_rounds="3"), "max_rounds", TypeError),
    ],
)
def test_bad_parameters_are_rejected_naming_the_parameter(criterion, param, error):
    proba = onehot(np.zeros(40, int), 2)
    with pytest.raises(
        error, match=f"'{param}' parameter of {type(criterion).__name__}"
    ):
        criterion.update(Scripted(proba), ROWS)


def test_should_stop_before_any_update_is_an_error():
    with pytest.raises(NotFittedError, match="has not seen a model yet"):
        OverallUncertainty().should_stop()


def test_unfitted_learner_is_rejected():
    with pytest.raises(NotFittedError):
        OverallUncertainty().update(skal.ActiveLearner(GaussianNB()), ROWS)


# ------------------------------------------------------ the loop helper
def test_should_stop_combines_and_predicts_once():
    proba = onehot(np.zeros(40, int), 2) * 0.998 + 0.001
    learner = Scripted(proba, n_labeled=50)
    criteria = [OverallUncertainty(), MaxConfidence(), Budget(max_labels=100)]
    Scripted.calls = 0
    stop, reason = should_stop(criteria, learner, ROWS)
    assert Scripted.calls == 1  # one pass over the pool for both
    assert stop
    assert reason.splitlines()[0].startswith("OverallUncertainty: mean entropy")
    assert reason.splitlines()[1].startswith("MaxConfidence: largest")
    stop, reason = should_stop(criteria, learner, ROWS, require="all")
    assert not stop and reason == "Budget: 50 labels < max_labels=100"
    with pytest.raises(TypeError, match=r"criteria\[1\] must be a StoppingCriterion"):
        should_stop([OverallUncertainty(), "kappa"], learner, ROWS)
    with pytest.raises(
        ValueError,
        match="The 'require' parameter of should_stop must be one of "
        "{'all', 'any'}; got 'most'",
    ):
        should_stop(criteria, learner, ROWS, require="most")
    with pytest.raises(ValueError, match="criteria is empty"):
        should_stop([], learner, ROWS)
    with pytest.raises(TypeError, match="'criteria' parameter of should_stop"):
        should_stop("kappa", learner, ROWS)


def test_criteria_run_on_a_network_and_a_dataset(digits):
    X, y = digits
    X = X.astype(np.float32)
    learner = skal.ActiveLearner(make_net(max_epochs=3), random_state=0)
    learner.fit(X[:50], y[:50])
    pool = TensorDataset(torch.from_numpy(X[50:400]))
    criteria = [StabilizingPredictions(stop_set_size=100, random_state=0), DeltaF()]
    assert should_stop(criteria, learner, pool) == (
        False,
        "StabilizingPredictions: first model: nothing to compare with yet\n"
        "DeltaF: first model: nothing to compare with yet",
    )
    idx = learner.query(pool, n=20)
    learner.teach(X[50:][idx], y[50:][idx])
    should_stop(criteria, learner, pool)
    assert len(criteria[0].kappas_) == 1 and -1 <= criteria[0].kappas_[0] <= 1
    assert len(criteria[0].X_stop_) == 100


# ----------------------------------------------------- simulated curves
def test_evaluate_stopping_replays_each_rounds_model():
    X, y = load_digits(return_X_y=True)
    X, y = X[:500], y[:500]
    kw = dict(cv=2, n_initial=20, query_size=20, n_rounds=4, random_state=0)
    learner = skal.ActiveLearner(GaussianNB(), "margin")
    result = evaluate_stopping(
        learner,
        X,
        y,
        {
            "kappa": StabilizingPredictions(window_size=1, stop_set_size=None),
            "budget": Budget(max_labels=60),
        },
        **kw,
    )
    n_labeled, scores, queried = active_learning_curve(
        learner, X, y, return_queried=True, **kw
    )
    np.testing.assert_array_equal(result.n_labeled, n_labeled)
    np.testing.assert_allclose(result.scores, scores)
    np.testing.assert_array_equal(result.stop_round["budget"], [2, 2])
    # the kappas from models refitted independently on each round's labels,
    # on the pool as it was after the initial set
    from skal.model_selection._curve import draw_splits

    for run, (train, _) in enumerate(draw_splits(2, X, y)):
        order = queried[run]
        stop_set = np.setdiff1d(train, order[:20])
        preds = [
            GaussianNB().fit(X[order[:n]], y[order[:n]]).predict(X[stop_set])
            for n in n_labeled
        ]
        kappas = [cohen_kappa_score(a, b) for a, b in zip(preds, preds[1:])]
        np.testing.assert_allclose(result.values["kappa"][run, 1:], kappas)
        first = next((r + 1 for r, k in enumerate(kappas) if k >= 0.99), -1)
        assert result.stop_round["kappa"][run] == first


def test_stopping_table_over_the_runs_that_stopped():
    result = StoppingEvaluation(
        n_labeled=np.array([10, 20, 30]),
        scores=np.array([[0.5, 0.7, 0.8], [0.4, 0.6, 0.9], [0.5, 0.5, 0.5]]),
        stop_round={"a": np.array([1, 2, -1]), "never": np.array([-1, -1, -1])},
    )
    rows = {row["criterion"]: row for row in result.table()}
    assert rows["a"]["labels_at_stop"] == 25
    assert rows["a"]["score_at_stop"] == pytest.approx((0.7 + 0.9) / 2)
    assert rows["a"]["final_score"] == pytest.approx((0.8 + 0.9) / 2)
    assert rows["a"]["labels_saved"] == 5
    assert rows["a"]["stopped"] == pytest.approx(2 / 3)
    assert np.isnan(rows["never"]["labels_at_stop"]) and rows["never"]["stopped"] == 0
    assert "never" in result.to_string()


def test_evaluate_stopping_rejects_bad_criteria():
    X, y = load_digits(return_X_y=True)
    learner = skal.ActiveLearner(GaussianNB())
    with pytest.raises(TypeError, match=r"criteria\['k'\] must be a StoppingCriterion"):
        evaluate_stopping(learner, X, y, {"k": 0.99}, cv=2)
    with pytest.raises(ValueError, match="criteria is empty"):
        evaluate_stopping(learner, X, y, [], cv=2)


def test_a_criterion_is_a_clonable_estimator():
    from sklearn.base import clone

    criterion = StabilizingPredictions(threshold=0.9, random_state=3)
    assert clone(criterion).get_params() == criterion.get_params()
    assert isinstance(criterion, StoppingCriterion)


class HeldOutAccuracy(StoppingCriterion):
    """Records the accuracy of the round's model on held-out rows."""

    def __init__(self, X=None, y=None):
        self.X = X
        self.y = y

    _needs_pool = False

    def _observe(self, round_):
        return False, round_.learner.score(self.X, self.y), "never stops"


def test_evaluate_stopping_shows_each_rounds_network(digits):
    X, y = digits
    X = X[:400].astype(np.float32)
    y = y[:400]
    train, test = np.arange(300), np.arange(300, 400)
    result = evaluate_stopping(
        skal.ActiveLearner(make_net(max_epochs=3), "entropy"),
        X,
        y,
        {"acc": HeldOutAccuracy(X[test], y[test]), "budget": Budget(max_rounds=1)},
        cv=[(train, test)],
        n_initial=20,
        query_size=20,
        n_rounds=3,
        random_state=0,
    )
    # the model each criterion saw at round r is the one scored at round r
    np.testing.assert_allclose(result.values["acc"], result.scores)
    assert len(np.unique(result.scores)) > 1  # the rounds' models differ
    np.testing.assert_array_equal(result.stop_round["budget"], [1])
    np.testing.assert_array_equal(result.stop_round["acc"], [-1])


def test_a_criterion_without_its_hook_cannot_be_built():
    from skal.stopping import StoppingCriterion
    from skal.stopping import _StopSetCriterion as StopSet

    class NoObserve(StoppingCriterion):
        pass

    class NoCompare(StopSet):
        pass

    for cls in (NoObserve, NoCompare):
        with pytest.raises(TypeError, match="abstract"):
            cls()
