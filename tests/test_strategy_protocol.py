"""The strategy protocol is declared on QueryStrategy: every hook has a
documented default, and an object that does not subclass it is wrapped once
(DuckTypedStrategy) so that the learner, the checkpoints and the Dask
dispatch call the hooks directly instead of probing for them."""

import ast
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import skal
from skal.model_selection import restore_strategy_state, strategy_state
from skal.strategies import (
    ALBL,
    DuckTypedStrategy,
    MarginSampling,
    QueryStrategy,
    StochasticBatch,
    get_strategy,
    register_strategy,
)
from skal.strategies._registry import _STRATEGIES
from skal.strategies.base import learns_from_answers

HOOKS = {"validate", "on_teach", "utility", "per_sample", "row_wise"}
HOOKS |= {"default_subset_size"}


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    return X[:20], y[:20], X[20:], y[20:]


class FirstRows:
    """Duck-typed: select only."""

    def select(self, context, X, n):
        return np.arange(n)


class Counting:
    """Duck-typed with every optional member and a fitted state."""

    row_wise = True
    default_subset_size = 7

    def __init__(self):
        self.calls = []

    def validate(self, estimator):
        self.calls.append(("validate", type(estimator).__name__))

    def utility(self, context, X):
        return -np.asarray(X)[:, 0]

    def select(self, context, X, n):
        self.calls.append(("select", len(X)))
        return np.argsort(self.utility(context, X), kind="stable")[::-1][:n]

    def on_teach(self, context, X, y):
        self.calls.append(("on_teach", len(X), len(context.y_labeled)))
        self.taught_ = getattr(self, "taught_", 0) + len(X)


def test_objects_are_wrapped_once_and_strategies_pass_through():
    margin = MarginSampling()
    assert get_strategy(margin) is margin
    wrapped = get_strategy(FirstRows())
    assert isinstance(wrapped, DuckTypedStrategy)
    assert get_strategy(wrapped) is wrapped
    with pytest.raises(TypeError, match="select method"):
        get_strategy(object())


def test_the_defaults_of_a_bare_object(data):
    X, y, X_pool, _ = data
    wrapped = get_strategy(FirstRows())
    assert (wrapped.per_sample, wrapped.row_wise) == (False, False)
    assert wrapped.default_subset_size is None
    assert not learns_from_answers(wrapped)
    learner = skal.ActiveLearner(LogisticRegression(), FirstRows()).fit(X, y)
    assert learner.query(X_pool, n=3).tolist() == [0, 1, 2]
    learner.teach(X_pool[:2], [0, 1])  # no hook: nothing to call
    with pytest.raises(TypeError, match="no per-sample utility"):
        learner.utility(X_pool)


def test_the_hooks_of_a_duck_typed_object_are_called(data):
    X, y, X_pool, y_pool = data
    user = Counting()
    learner = skal.ActiveLearner(LogisticRegression(), user, random_state=0)
    learner.fit(X, y)
    strategy = learner.strategy_
    # fit clones the wrapper, and with it the object, as sklearn clones
    assert isinstance(strategy, DuckTypedStrategy) and strategy.strategy is not user
    assert user.calls == []
    assert strategy.strategy.calls == [("validate", "LogisticRegression")]
    assert strategy.per_sample and strategy.row_wise and learns_from_answers(strategy)
    learner.query(X_pool, n=2)
    # the object's default_subset_size drew 7 of the 40 candidates
    assert strategy.strategy.calls[-1] == ("select", 7)
    learner.teach(X_pool[:3], y_pool[:3])
    assert strategy.strategy.calls[-1] == ("on_teach", 3, 23)
    np.testing.assert_array_equal(learner.utility(X_pool), -X_pool[:, 0])


def test_validate_of_a_duck_typed_object_runs_before_training(data):
    X, y, _, _ = data

    class Refuses(FirstRows):
        def validate(self, estimator):
            raise ValueError("this strategy needs a network")

    learner = skal.ActiveLearner(LogisticRegression(), Refuses())
    with pytest.raises(ValueError, match="needs a network"):
        learner.fit(X, y)
    assert not hasattr(learner.estimator_, "coef_")


def test_a_duck_typed_base_serves_a_batch_strategy(data):
    X, y, X_pool, _ = data
    strategy = StochasticBatch(base=Counting(), mode="softrank")
    assert strategy.default_subset_size == 7
    learner = skal.ActiveLearner(LogisticRegression(), strategy, random_state=0)
    picked = learner.fit(X, y).query(X_pool, n=3)
    assert len(set(picked.tolist())) == 3


def test_a_set_based_duck_typed_base_is_refused(data):
    X, y, _, _ = data
    learner = skal.ActiveLearner(LogisticRegression(), StochasticBatch(FirstRows()))
    with pytest.raises(TypeError, match="'base' parameter.*method utility"):
        learner.fit(X, y)

    class SetBased(Counting):
        per_sample = False  # has a utility, declares itself set-based

    learner = skal.ActiveLearner(LogisticRegression(), StochasticBatch(SetBased()))
    with pytest.raises(ValueError, match="per-sample strategy"):
        learner.fit(X, y)


def test_checkpoints_see_through_the_wrapper(data):
    X, y, X_pool, y_pool = data
    learner = skal.ActiveLearner(LogisticRegression(), Counting(), random_state=0)
    learner.fit(X, y).teach(X_pool[:4], y_pool[:4])
    state, arrays = strategy_state(learner.strategy_)
    assert state == {"taught_": {"int": 4}}
    fresh = skal.ActiveLearner(LogisticRegression(), Counting(), random_state=0)
    fresh.restore(
        np.concatenate([X, X_pool[:4]]),
        np.concatenate([y, y_pool[:4]]),
        strategy_state=(state, arrays),
    )
    assert fresh.strategy_.strategy.taught_ == 4


def test_albl_with_a_duck_typed_arm_round_trips(data):
    X, y, X_pool, y_pool = data
    learner = skal.ActiveLearner(
        LogisticRegression(), ALBL([Counting(), "margin"]), random_state=0
    )
    learner.fit(X, y)
    for start in (0, 2):
        learner.query(X_pool[start:], n=2)
        learner.teach(X_pool[start : start + 2], y_pool[start : start + 2])
    arm = learner.strategy_.strategies_[0]
    assert isinstance(arm, DuckTypedStrategy) and arm.strategy.taught_ == 4
    state, arrays = strategy_state(learner.strategy_)
    fresh = ALBL([Counting(), "margin"])
    restore_strategy_state(fresh, state, arrays)
    assert fresh.strategies_[0].strategy.taught_ == 4
    np.testing.assert_array_equal(fresh.log_weights_, learner.strategy_.log_weights_)


def test_registration_wraps_once():
    register_strategy("_test_first_rows", FirstRows())
    try:
        assert isinstance(_STRATEGIES["_test_first_rows"], DuckTypedStrategy)
        assert isinstance(get_strategy("_test_first_rows"), DuckTypedStrategy)
    finally:
        del _STRATEGIES["_test_first_rows"]


def test_only_strategies_with_the_hook_learn_from_answers():
    class Taught(QueryStrategy):
        def on_teach(self, context, X, y):
            pass

    assert not learns_from_answers(MarginSampling())
    assert learns_from_answers(Taught())
    assert learns_from_answers(ALBL(["margin", "random"]))


def _hook_probes(path):
    """``getattr(obj, "<hook>", ...)`` calls in one source file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in HOOKS
        ):
            yield f"{path.name}:{node.lineno} {node.args[1].value}"


def test_no_module_probes_a_strategy_for_a_hook():
    # the adapter reads optional members of duck-typed objects by a variable
    # name; every other caller uses the declared methods and attributes
    root = Path(skal.__file__).parent
    probes = [p for f in sorted(root.rglob("*.py")) for p in _hook_probes(f)]
    assert probes == []
