"""Every query strategy, registered or exported, against one contract.

- the strategy contract: ``query`` returns ``n`` distinct row indices, best
  first (for per-sample strategies: the ``n`` largest utilities, in order),
  and ``utility`` gives one float per row or a TypeError for set-based ones;
- scikit-learn's checks of the parameter interface;
- validation before training: every invalid parameter and every estimator
  the strategy cannot work with is rejected by ``ActiveLearner.fit`` before
  a single forward pass (or ``fit`` of a non-network classifier) runs;
- every exported strategy is registered, declares a constraint for each
  parameter, and documents an Examples and a References section.
"""

import pickle

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

import skal
from skal.model_selection import ActiveLearningSimulation, compare_strategies
from skal.nets import MLP
from skal.strategies import (
    ALBL,
    BALD,
    DuckTypedStrategy,
    LLoss,
    QueryStrategy,
    TiDAL,
    get_strategy,
    get_strategy_names,
)
from skal.strategies._registry import _STRATEGIES
from skal.validation import make_constraint

NAMES = get_strategy_names()
CLASSES = sorted(
    (
        obj
        for obj in map(vars(skal.strategies).get, skal.strategies.__all__)
        if isinstance(obj, type) and issubclass(obj, QueryStrategy)
        # the base class, and the adapter of objects that do not subclass it
        if obj not in (QueryStrategy, DuckTypedStrategy)
    ),
    key=lambda cls: cls.__name__,
)
TAPS = ["layers.2", "layers.4"]  # the two hidden ReLUs of MLP((16, 8))


class CountingMLP(MLP):
    """An MLP that counts its forward passes, over all instances (clones)."""

    forwards = 0

    def forward(self, x):
        CountingMLP.forwards += 1
        return super().forward(x)


class CountingLR(LogisticRegression):
    """A logistic regression that counts its fits, over all clones."""

    fits = 0

    def fit(self, X, y, sample_weight=None):
        CountingLR.fits += 1
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.fixture(autouse=True)
def _reset_counters():
    CountingMLP.forwards = CountingLR.fits = 0


def make_net(cls=skal.NeuralNetClassifier, dropout=0.3, **kwargs):
    params = dict(
        module=CountingMLP,
        module__hidden_units=(16, 8),
        module__in_features=6,
        module__dropout=dropout,
        max_epochs=2,
        batch_size=32,
    )
    if cls is skal.TiDALClassifier:
        params.update(tidal_layers=TAPS, module__dropout=0.0)
    if cls is skal.LLossClassifier:
        params.update(lloss_layers=TAPS, module__dropout=0.0)
    params.update(kwargs)
    return cls(**params)


def estimator_for(strategy):
    """The estimator each strategy works with."""
    if isinstance(strategy, TiDAL) or strategy is TiDAL:
        return make_net(skal.TiDALClassifier)
    if isinstance(strategy, LLoss) or strategy is LLoss:
        return make_net(skal.LLossClassifier)
    return make_net()


_FITTED = {}


@pytest.fixture
def fitted(data):
    """A fitted learner for a registered name (cached for the module)."""

    def get(name):
        if name not in _FITTED:
            X, y, _, _ = data
            learner = skal.ActiveLearner(
                estimator_for(get_strategy(name)), strategy=name, random_state=0
            )
            _FITTED[name] = pickle.dumps(learner.fit(X, y))
        return pickle.loads(_FITTED[name])

    return get


# ------------------------------------------------------------ the contract
@pytest.mark.parametrize("name", NAMES)
def test_query_returns_n_distinct_indices_reproducibly(data, fitted, name):
    _, _, X_pool, _ = data
    picks = [fitted(name).query(X_pool, n=7) for _ in range(2)]
    assert picks[0].shape == (7,) and picks[0].dtype.kind in "iu"
    assert len(np.unique(picks[0])) == 7
    assert 0 <= picks[0].min() and picks[0].max() < len(X_pool)
    np.testing.assert_array_equal(picks[0], picks[1])


@pytest.mark.parametrize("name", NAMES)
def test_utility_ranks_the_query_or_is_a_type_error(data, fitted, name):
    _, _, X_pool, _ = data
    learner = fitted(name)
    if not learner.strategy_.per_sample:
        with pytest.raises(TypeError, match="no per-sample utility"):
            learner.utility(X_pool)
        return
    # the same learner state: utility and query see the same random draws
    utility = pickle.loads(pickle.dumps(learner)).utility(X_pool)
    picks = learner.query(X_pool, n=7)
    assert utility.shape == (len(X_pool),) and utility.dtype == np.float64
    assert np.isfinite(utility).all()
    assert np.all(np.diff(utility[picks]) <= 0)  # best first
    assert utility[picks].min() >= np.delete(utility, picks).max()


@pytest.mark.parametrize("name", NAMES)
def test_full_loop_and_pickling(data, fitted, name):
    _, _, X_pool, y_pool = data
    learner = fitted(name)
    n_labeled = learner.n_labeled_
    idx = learner.query(X_pool, n=5)
    learner.teach(X_pool[idx], y_pool[idx])
    assert learner.n_labeled_ == n_labeled + 5
    restored = pickle.loads(pickle.dumps(learner))
    np.testing.assert_array_equal(
        restored.query(X_pool, n=5), learner.query(X_pool, n=5)
    )


# ---------------------------------------------- sklearn's parameter checks
@pytest.mark.parametrize(
    "check",
    [
        check_get_params_invariance,
        check_set_params,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
    ],
    ids=lambda check: check.__name__,
)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_sklearn_parameter_checks(cls, check):
    check(cls.__name__, cls())


# ------------------------------------------------ validation before training
class _BadType:
    """No constraint accepts an instance of this class."""

    def __repr__(self):
        return "_BadType()"


def _invalid_parameters():
    """Per strategy class and parameter: a value of a bad type (TypeError),
    then a value of an admitted type outside each constraint that refuses
    one (ValueError)."""
    cases = []
    for cls in CLASSES:
        for param, declared in cls._parameter_constraints.items():
            cases.append((cls, param, _BadType(), TypeError))
            constraints = [make_constraint(c) for c in declared]
            for constraint in constraints:
                try:
                    bad = constraint.invalid_value()
                except NotImplementedError:
                    continue
                if not any(c.is_satisfied_by(bad) for c in constraints):
                    cases.append((cls, param, bad, ValueError))
    return cases


INVALID = _invalid_parameters()


@pytest.mark.parametrize(
    "cls, param, bad, error",
    INVALID,
    ids=[f"{c.__name__}-{p}={b!r}" for c, p, b, _ in INVALID],
)
def test_invalid_parameter_rejected_before_training(data, cls, param, bad, error):
    X, y, _, _ = data
    learner = skal.ActiveLearner(estimator_for(cls), cls(**{param: bad}))
    with pytest.raises(error, match=rf"The '{param}' parameter of {cls.__name__}"):
        learner.fit(X, y)
    assert CountingMLP.forwards == 0


def _mlp_without_dropout():
    return make_net(dropout=0.0)


# (strategy, estimator factory, error, message) beyond the declared
# constraints: values that depend on other parameters, and estimators the
# strategy cannot work with
MISMATCHES = [
    (
        lambda: skal.strategies.DynamicAL(gamma=float("nan")),
        make_net,
        ValueError,
        "'gamma' parameter of DynamicAL",
    ),
    (lambda: ALBL(strategies=[]), make_net, ValueError, "at least one strategy"),
    (
        lambda: ALBL(p_min=0.9),
        make_net,
        ValueError,
        r"p_min must be None or in \[0, 1/2\] for 2 strategies, got 0.9",
    ),
    (
        lambda: ALBL(["margin", "nope"]),
        make_net,
        ValueError,
        r"'nope' is not a registered strategy; valid names are \['albl'",
    ),
    (lambda: ALBL(["margin", 3]), make_net, TypeError, "or an object with a select"),
    (
        lambda: ALBL(["margin", skal.strategies.CoreSet(chunk_size=0)]),
        make_net,
        ValueError,
        "'chunk_size' parameter of CoreSet",
    ),
    (
        lambda: BALD(),
        lambda: CountingLR(),
        TypeError,
        r"strategy 'bald' needs a neural network classifier .* got CountingLR",
    ),
    (
        lambda: BALD(),
        _mlp_without_dropout,
        ValueError,
        r"'bald' needs dropout layers .* has none; add an nn.Dropout \(e.g. "
        r"module__dropout=0.2",
    ),
    (
        lambda: "dynamic_al",
        lambda: CountingLR(),
        TypeError,
        "strategy 'dynamic_al' needs a neural network classifier",
    ),
    (
        lambda: "tidal",
        make_net,
        TypeError,
        r"'tidal' needs a skal.TiDALClassifier .* got NeuralNetClassifier",
    ),
    (
        lambda: "tidal",
        lambda: make_net(skal.LLossClassifier),
        TypeError,
        "got LLossClassifier",
    ),
    (
        lambda: "tidal",
        lambda: make_pipeline(StandardScaler(), make_net()),
        TypeError,
        "'tidal' needs a skal.TiDALClassifier",
    ),
    (
        lambda: "lloss",
        lambda: make_net(skal.TiDALClassifier),
        TypeError,
        r"'lloss' needs a skal.LLossClassifier .* got TiDALClassifier",
    ),
    (
        lambda: "lloss",
        lambda: CountingLR(),
        TypeError,
        "strategy 'lloss' needs a neural network classifier",
    ),
    (
        lambda: "tidal",
        lambda: make_net(skal.TiDALClassifier, tidal_layers=["layers.2", "nope"]),
        ValueError,
        r"CountingMLP has no submodule named 'nope'; valid names are: layers, "
        r"layers.0, layers.1",
    ),
    (
        lambda: ALBL(["margin", "bald"]),
        lambda: CountingLR(),
        TypeError,
        "strategy 'bald' needs a neural network",
    ),
    (
        lambda: ALBL(["margin", "bald"]),
        _mlp_without_dropout,
        ValueError,
        "'bald' needs dropout layers",
    ),
]


MISMATCH_IDS = [
    "DynamicAL-gamma=nan",
    "ALBL-no-arms",
    "ALBL-p_min-above-1/K",
    "ALBL-unknown-arm",
    "ALBL-arm-not-a-strategy",
    "ALBL-invalid-arm",
    "bald-on-LR",
    "bald-without-dropout",
    "dynamic_al-on-LR",
    "tidal-on-plain-net",
    "tidal-on-LLossClassifier",
    "tidal-on-pipeline-of-plain-net",
    "lloss-on-TiDALClassifier",
    "lloss-on-LR",
    "tidal-net-unknown-layer",
    "ALBL-bald-arm-on-LR",
    "ALBL-bald-arm-without-dropout",
]


@pytest.mark.parametrize(
    "strategy, estimator, error, match", MISMATCHES, ids=MISMATCH_IDS
)
def test_mismatch_rejected_before_training(data, strategy, estimator, error, match):
    X, y, _, _ = data
    learner = skal.ActiveLearner(estimator(), strategy(), random_state=0)
    with pytest.raises(error, match=match):
        learner.fit(X, y)
    assert CountingMLP.forwards == 0 and CountingLR.fits == 0


def test_valid_strategies_do_train(data):
    """The counters used above do count training."""
    X, y, _, _ = data
    skal.ActiveLearner(make_net(), "bald").fit(X, y)
    skal.ActiveLearner(CountingLR(), "margin").fit(X, y)
    assert CountingMLP.forwards == 4 and CountingLR.fits == 1  # 2 epochs x 2


def test_model_selection_validates_through_fit(data):
    X, y, X_pool, y_pool = data
    X_all, y_all = np.concatenate([X, X_pool]), np.concatenate([y, y_pool])
    with pytest.raises(TypeError, match="'tidal' needs a skal.TiDALClassifier"):
        compare_strategies(
            skal.ActiveLearner(make_net()),
            X_all,
            y_all,
            ["tidal"],
            cv=2,
            n_initial=20,
            query_size=5,
            n_rounds=1,
        )
    simulation = ActiveLearningSimulation(
        skal.ActiveLearner(make_net(), skal.strategies.CoreSet(chunk_size=0)),
        n_initial=20,
        query_size=5,
        n_rounds=1,
    )
    with pytest.raises(ValueError, match="'chunk_size' parameter"):
        simulation.fit(X_all, y_all)
    assert CountingMLP.forwards == 0


def test_user_strategies_without_constraints_still_work(data):
    X, y, X_pool, _ = data

    class FirstFeature(QueryStrategy):
        def __init__(self, sign=1):
            self.sign = sign

        def utility(self, context, X):
            return self.sign * X[:, 0]

    class DuckTyped:
        def select(self, context, X, n):
            return np.arange(n)

    for strategy in (FirstFeature(sign=-1), DuckTyped()):
        learner = skal.ActiveLearner(LogisticRegression(), strategy).fit(X, y)
        assert len(learner.query(X_pool, n=3)) == 3


# ------------------------------------------------------ registry and docs
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_exported_strategy_is_registered(cls):
    assert any(type(s) is cls for s in _STRATEGIES.values())


@pytest.mark.parametrize("name", NAMES)
def test_registered_strategy_is_exported(name):
    assert type(get_strategy(name)) in CLASSES


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_parameter_has_a_constraint(cls):
    assert set(cls().get_params(deep=False)) == set(cls._parameter_constraints)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_docstring_has_examples_and_references(cls):
    doc = cls.__doc__
    assert "\n    Examples\n    --------\n    >>> " in doc
    assert "\n    References\n    ----------\n" in doc
