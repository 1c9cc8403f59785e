"""The declared-constraint helper: which values pass, which error, what it says."""

import math
from numbers import Integral, Real

import numpy as np
import pytest

from skal.validation import (
    HasMethods,
    InstanceOf,
    Interval,
    Options,
    SequenceOf,
    check_params,
    make_constraint,
    validate_arguments,
    validate_params,
)


# ------------------------------------------------------------ intervals
@pytest.mark.parametrize(
    "closed, inside, outside",
    [
        ("left", [0, 0.5, 0.999], [1, -0.1, 1.5]),
        ("right", [1, 0.5, 0.001], [0, -0.1, 1.5]),
        ("both", [0, 1, 0.5], [-0.001, 1.001]),
        ("neither", [0.5, 0.001], [0, 1]),
    ],
)
def test_interval_bounds(closed, inside, outside):
    unit = Interval(Real, 0, 1, closed=closed)
    assert all(unit.is_satisfied_by(v) for v in inside)
    assert not any(unit.is_satisfied_by(v) for v in outside)


def test_interval_kinds():
    ints = Interval(Integral, 1, None, closed="left")
    assert ints.is_satisfied_by(1) and ints.is_satisfied_by(np.int64(7))
    # a float, even a whole one, and a bool are not of the admitted type
    for value in (1.0, 2.5, True, np.bool_(True), "3", None):
        assert not ints.admits_type(value)
    reals = Interval(Real, 0, None, closed="left")
    assert reals.admits_type(3) and reals.admits_type(np.float32(0.5))
    assert not reals.admits_type(False)
    # NaN is a float but in no interval; inf only where the bound is closed
    assert reals.admits_type(math.nan) and not reals.is_satisfied_by(math.nan)
    assert not reals.is_satisfied_by(math.inf)
    assert Interval(Real, 0, None, closed="both").is_satisfied_by(math.inf)
    assert not Interval(Real, None, None, closed="neither").is_satisfied_by(math.nan)


def test_interval_describes_itself_and_its_invalid_values():
    assert str(Interval(Integral, 1, None, closed="left")) == "an int in [1, inf)"
    assert str(Interval(Real, 0, 1, closed="right")) == "a float in (0, 1]"
    assert str(Interval(Real, None, 0, closed="neither")) == "a float in (-inf, 0)"
    for interval in (
        Interval(Integral, 1, None, closed="left"),
        Interval(Real, 0, 1, closed="neither"),
        Interval(Real, None, 5, closed="right"),
        Interval(Real, None, None, closed="neither"),
    ):
        bad = interval.invalid_value()
        assert interval.admits_type(bad) and not interval.is_satisfied_by(bad)
    with pytest.raises(NotImplementedError):
        Interval(Integral, None, None, closed="neither").invalid_value()


def test_interval_rejects_a_bad_declaration():
    with pytest.raises(ValueError, match="closed must be"):
        Interval(Real, 0, 1, closed="open")
    with pytest.raises(ValueError, match="empty interval"):
        Interval(Real, 2, 1)
    with pytest.raises(TypeError, match="kind must be"):
        Interval(float, 0, 1)


# ------------------------------------------------------- other constraints
def test_options_sequences_methods_instances():
    options = Options({"b", "a"})
    assert str(options) == "one of {'a', 'b'}"
    assert options.is_satisfied_by("a") and not options.is_satisfied_by("c")
    assert options.admits_type("c") and not options.admits_type(1)
    layers = SequenceOf(str)
    assert layers.is_satisfied_by(("x", "y")) and not layers.is_satisfied_by([])
    assert layers.admits_type([]) and not layers.admits_type(["x", 1])
    assert not layers.admits_type("xy")  # a string is not a list of names
    assert str(SequenceOf(int, min_length=0)) == "a list of int"
    fit = HasMethods(["fit", "predict"])
    assert str(fit) == "an object with the methods fit, predict"

    class Model:
        def fit(self):
            pass

        predict = None  # an attribute, not a method

    assert not fit.is_satisfied_by(Model())
    assert str(InstanceOf((list, np.ndarray))) == (
        "an instance of list or numpy.ndarray"
    )


@pytest.mark.parametrize(
    "form, good, bad",
    [
        (None, [None], [0, ""]),
        ("boolean", [True, np.bool_(False)], [1, "yes"]),
        (callable, [len, lambda: 0], [3]),
        ("random_state", [None, 0, 2**32 - 1, np.random.RandomState(0)], [-1, 2**32]),
        ("array-like", [[1], (1,), np.zeros(2)], [3, None]),
        ("iterable", [[1], iter([]), range(3)], ["abc", 3]),
        (str, ["x"], [b"x"]),
    ],
)
def test_named_forms(form, good, bad):
    constraint = make_constraint(form)
    assert all(constraint.is_satisfied_by(v) for v in good)
    assert not any(constraint.is_satisfied_by(v) for v in bad)


def test_make_constraint_refuses_unknown_forms():
    with pytest.raises(ValueError, match="unknown constraint 'positive'"):
        make_constraint("positive")
    with pytest.raises(TypeError, match="cannot make a constraint of 3"):
        make_constraint(3)


# --------------------------------------------------- the error convention
SIZE = {"size": [Interval(Integral, 1, None, closed="left"), None]}
MODE = {"mode": [Options({"fast", "exact"})]}


@pytest.mark.parametrize(
    "constraints, value, error, message",
    [
        (SIZE, 0, ValueError, "must be an int in [1, inf) or None; got 0."),
        (SIZE, 1.5, TypeError, "got 1.5 of type float."),
        (SIZE, "3", TypeError, "got '3' of type str."),
        (SIZE, True, TypeError, "got True of type bool."),
        (MODE, "slow", ValueError, "must be one of {'exact', 'fast'}; got 'slow'."),
        (MODE, 1, TypeError, "got 1 of type int."),
        (
            {"seed": ["random_state"]},
            -3,
            ValueError,
            "must be None, an int in [0, 4294967295] or a numpy.random.RandomState",
        ),
    ],
)
def test_type_error_for_a_type_value_error_for_a_value(
    constraints, value, error, message
):
    (name,) = constraints
    with pytest.raises(error) as info:
        validate_params("Owner", {name: value}, constraints)
    assert type(info.value) is error
    assert str(info.value).startswith(f"The '{name}' parameter of Owner must be ")
    assert message in str(info.value)


def test_valid_values_and_unconstrained_parameters_pass():
    validate_params("Owner", {"size": None, "other": object()}, SIZE)
    validate_params("Owner", {"size": np.int32(4)}, SIZE)
    validate_params("Owner", {}, SIZE)  # absent parameters are not checked


def test_check_params_reads_the_attributes():
    class Thing:
        _parameter_constraints = MODE

        def __init__(self, mode):
            self.mode = mode

    check_params(Thing("fast"))
    with pytest.raises(ValueError, match="The 'mode' parameter of Thing must be"):
        check_params(Thing("slow"))


def test_validate_arguments_checks_each_call():
    calls = []

    @validate_arguments({"n": SIZE["size"], "mode": MODE["mode"]})
    def run(data, n=None, *, mode="fast"):
        calls.append((data, n, mode))
        return n

    assert run("d", 2, mode="exact") == 2 and run.__name__ == "run"
    with pytest.raises(ValueError, match=r"The 'n' parameter of .*run must be"):
        run("d", 0)
    with pytest.raises(ValueError, match="'mode' parameter"):
        run("d", mode="slow")  # a default is fine, a passed value is checked
    with pytest.raises(TypeError, match="'n' parameter"):
        run("d", n="2")
    assert calls == [("d", 2, "exact")]  # nothing ran after a refusal
    with pytest.raises(ValueError, match=r"constraints for \['m'\]"):
        validate_arguments({"m": [None]})(lambda n: n)


def test_skal_imports_no_private_sklearn_module():
    """A scikit-learn release may change its private modules at will: no
    module of skal imports one (``sklearn.utils._param_validation`` was)."""
    import ast
    from pathlib import Path

    import skal

    private = []
    for path in Path(skal.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "sklearn" and any(p.startswith("_") for p in parts):
                    private.append(f"{path.name}: {name}")
    assert private == []


def test_a_constraint_must_say_what_it_accepts():
    from skal.validation import Constraint

    class Vague(Constraint):
        def __str__(self):
            return "anything"

    with pytest.raises(TypeError, match="abstract"):
        Vague()
