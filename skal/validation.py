"""Declared parameter constraints, checked before any work is done.

A class lists the accepted forms of each parameter in a
``_parameter_constraints`` dict (a public function passes its own dict to
:func:`validate_arguments`); every entry is a list of constraints, and a value
is valid when it satisfies at least one of them. The forms are written as

- a :class:`Constraint` (:class:`Interval`, :class:`Options`,
  :class:`HasMethods`, :class:`SequenceOf`, ...);
- a type, e.g. ``str`` or ``list`` (an instance of it);
- ``None`` (the value None);
- the builtin ``callable`` (any callable);
- the strings ``"boolean"`` (bool or numpy bool), ``"random_state"`` (None,
  a seed in ``[0, 2**32 - 1]`` or a ``numpy.random.RandomState``),
  ``"array-like"`` (a list, tuple, array or anything with ``__array__``) and
  ``"iterable"`` (any iterable but a string).

The error follows scikit-learn's convention: a value whose type no
constraint admits raises a TypeError, a value of an admitted type that is
out of range or not among the options raises a ValueError. The message names
the owner (class or function), the parameter, the value received and the
accepted forms.

Examples
--------
>>> from numbers import Integral
>>> from skal.validation import Interval, validate_params
>>> validate_params("f", {"n": 0}, {"n": [Interval(Integral, 1, None)]})
Traceback (most recent call last):
...
ValueError: The 'n' parameter of f must be an int in [1, inf); got 0.
"""

from __future__ import annotations

import functools
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from numbers import Integral, Real

import numpy as np

__all__ = [
    "Constraint",
    "HasMethods",
    "InstanceOf",
    "Interval",
    "Options",
    "SequenceOf",
    "check_params",
    "make_constraint",
    "validate_arguments",
    "validate_params",
]


class Constraint(ABC):
    """One accepted form of a parameter.

    A subclass says whether a value is of a type the form is about
    (:meth:`admits_type`), whether it satisfies the form
    (:meth:`is_satisfied_by`), how the form reads in an error message
    (``str``) and, for tests, which value of an admitted type it refuses
    (:meth:`invalid_value`).

    Examples
    --------
    >>> from skal.validation import Constraint, validate_params
    >>> class Even(Constraint):
    ...     def admits_type(self, value):
    ...         return isinstance(value, int)
    ...     def is_satisfied_by(self, value):
    ...         return isinstance(value, int) and value % 2 == 0
    ...     def __str__(self):
    ...         return "an even int"
    >>> validate_params("f", {"k": 3}, {"k": [Even()]})
    Traceback (most recent call last):
    ...
    ValueError: The 'k' parameter of f must be an even int; got 3.
    """

    def admits_type(self, value) -> bool:
        """Whether ``value`` has a type this constraint is about.

        Parameters
        ----------
        value : object

        Returns
        -------
        admitted : bool
            True for every satisfying value; by default, only for those.
        """
        return self.is_satisfied_by(value)

    @abstractmethod
    def is_satisfied_by(self, value) -> bool:
        """Whether ``value`` is an accepted value (every constraint says).

        Parameters
        ----------
        value : object

        Returns
        -------
        satisfied : bool
        """

    def invalid_value(self):
        """A value of an admitted type that the constraint refuses.

        Raises
        ------
        NotImplementedError
            When every value of the admitted types satisfies it.
        """
        raise NotImplementedError(f"{self} refuses no value of its own type")


class Interval(Constraint):
    """A number of a kind (``numbers.Integral`` or ``numbers.Real``) in a range.

    Parameters
    ----------
    kind : {numbers.Integral, numbers.Real}
        Integral admits Python and numpy integers; Real admits those and
        floats. Booleans are never numbers here.
    left, right : number or None
        The bounds; None is minus or plus infinity.
    closed : {"left", "right", "both", "neither"}, default="left"
        Which bounds belong to the interval; a closed infinite bound admits
        infinity itself.

    Examples
    --------
    >>> from numbers import Real
    >>> from skal.validation import Interval
    >>> unit = Interval(Real, 0, 1, closed="both")
    >>> str(unit), unit.is_satisfied_by(0.5), unit.is_satisfied_by(1.5)
    ('a float in [0, 1]', True, False)
    """

    def __init__(self, kind, left, right, *, closed="left"):
        if kind not in (Integral, Real):
            raise TypeError(
                f"kind must be numbers.Integral or numbers.Real, got {kind}"
            )
        if closed not in ("left", "right", "both", "neither"):
            raise ValueError(
                f"closed must be 'left', 'right', 'both' or 'neither', got {closed!r}"
            )
        if left is not None and right is not None and left > right:
            raise ValueError(f"empty interval: left={left} > right={right}")
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def admits_type(self, value) -> bool:
        return isinstance(value, self.kind) and not isinstance(value, bool | np.bool_)

    def is_satisfied_by(self, value) -> bool:
        if not self.admits_type(value):
            return False
        if isinstance(value, Real) and math.isnan(value):
            return False
        left_closed = self.closed in ("left", "both")
        right_closed = self.closed in ("right", "both")
        low = -math.inf if self.left is None else self.left
        high = math.inf if self.right is None else self.right
        above = value >= low if left_closed else value > low
        below = value <= high if right_closed else value < high
        return bool(above and below)

    def invalid_value(self):
        step = 1 if self.kind is Integral else 0.5
        if self.left is not None:
            return self.left - step if self.closed in ("left", "both") else self.left
        if self.right is not None:
            return self.right + step if self.closed in ("right", "both") else self.right
        if self.kind is Real:
            return math.nan
        return super().invalid_value()

    def __str__(self):
        kind = "an int" if self.kind is Integral else "a float"
        left = "-inf" if self.left is None else f"{self.left}"
        right = "inf" if self.right is None else f"{self.right}"
        opening = "[" if self.closed in ("left", "both") else "("
        closing = "]" if self.closed in ("right", "both") else ")"
        return f"{kind} in {opening}{left}, {right}{closing}"


class Options(Constraint):
    """One of a set of values of one type (``str`` by default).

    Parameters
    ----------
    options : iterable
        The accepted values.
    kind : type, default=str
        Their type: a value of this type that is not an option is a wrong
        value (ValueError), a value of another type a wrong type (TypeError).

    Examples
    --------
    >>> from skal.validation import Options
    >>> str(Options({"entropy", "margin"}))
    "one of {'entropy', 'margin'}"
    """

    def __init__(self, options, *, kind=str):
        self.options, self.kind = frozenset(options), kind

    def admits_type(self, value) -> bool:
        return isinstance(value, self.kind)

    def is_satisfied_by(self, value) -> bool:
        return self.admits_type(value) and value in self.options

    def invalid_value(self):
        if self.kind is str:
            return "__not_an_option__"
        return super().invalid_value()

    def __str__(self):
        listed = ", ".join(repr(o) for o in sorted(self.options, key=repr))
        return f"one of {{{listed}}}"


class HasMethods(Constraint):
    """An object with the named (callable) methods.

    Parameters
    ----------
    methods : str or list of str
        The names of the methods.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skal.validation import HasMethods
    >>> HasMethods(["fit", "predict_proba"]).is_satisfied_by(LogisticRegression())
    True
    """

    def __init__(self, methods):
        self.methods = [methods] if isinstance(methods, str) else list(methods)

    def is_satisfied_by(self, value) -> bool:
        return all(callable(getattr(value, m, None)) for m in self.methods)

    def __str__(self):
        names = ", ".join(self.methods)
        return f"an object with the method{'s' * (len(self.methods) > 1)} {names}"


class InstanceOf(Constraint):
    """An instance of a type (or of one of a tuple of types).

    A type given as a form (``str``) is made into this constraint.

    Parameters
    ----------
    kind : type or tuple of types

    Examples
    --------
    >>> from skal.validation import InstanceOf
    >>> str(InstanceOf((list, tuple))), InstanceOf(str).is_satisfied_by("a")
    ('an instance of list or tuple', True)
    """

    def __init__(self, kind):
        self.kind = kind

    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, self.kind)

    def __str__(self):
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        names = [_type_name(k) for k in kinds]
        return "an instance of " + " or ".join(names)


class SequenceOf(Constraint):
    """A list or tuple of items of one type, with at least ``min_length`` items.

    A sequence holding an item of another type is of the wrong type; one
    that is too short is a wrong value.

    Parameters
    ----------
    item : type or tuple of types
        The type of every item.
    min_length : int, default=1
        The fewest items accepted.

    Examples
    --------
    >>> from skal.validation import SequenceOf
    >>> layers = SequenceOf(str)
    >>> layers.is_satisfied_by(["layer1"]), layers.admits_type([]), str(layers)
    (True, True, 'a non-empty list of str')
    """

    def __init__(self, item, *, min_length=1):
        self.item, self.min_length = item, min_length

    def admits_type(self, value) -> bool:
        return isinstance(value, list | tuple) and all(
            isinstance(v, self.item) for v in value
        )

    def is_satisfied_by(self, value) -> bool:
        return self.admits_type(value) and len(value) >= self.min_length

    def invalid_value(self):
        if self.min_length > 0:
            return []
        return super().invalid_value()

    def __str__(self):
        size = "a non-empty list" if self.min_length == 1 else "a list"
        if self.min_length > 1:
            size = f"a list of at least {self.min_length} items"
        return f"{size} of {_type_name(self.item)}"


class _NoneConstraint(Constraint):
    def is_satisfied_by(self, value) -> bool:
        return value is None

    def __str__(self):
        return "None"


class _Boolean(Constraint):
    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, bool | np.bool_)

    def __str__(self):
        return "a bool"


class _Callable(Constraint):
    def is_satisfied_by(self, value) -> bool:
        return callable(value)

    def __str__(self):
        return "a callable"


class _ArrayLike(Constraint):
    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, list | tuple | np.ndarray) or hasattr(
            value, "__array__"
        )

    def __str__(self):
        return "an array-like"


class _Iterable(Constraint):
    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, Iterable) and not isinstance(value, str | bytes)

    def __str__(self):
        return "an iterable"


class _RandomState(Constraint):
    _seeds = Interval(Integral, 0, 2**32 - 1, closed="both")

    def admits_type(self, value) -> bool:
        return (
            value is None
            or isinstance(value, np.random.RandomState)
            or self._seeds.admits_type(value)
        )

    def is_satisfied_by(self, value) -> bool:
        return (
            value is None
            or isinstance(value, np.random.RandomState)
            or self._seeds.is_satisfied_by(value)
        )

    def invalid_value(self):
        return -1

    def __str__(self):
        return f"None, {self._seeds} or a numpy.random.RandomState"


_NAMED = {
    "boolean": _Boolean,
    "random_state": _RandomState,
    "array-like": _ArrayLike,
    "iterable": _Iterable,
}


def make_constraint(form) -> Constraint:
    """The :class:`Constraint` for one declared form (see the module docstring).

    Parameters
    ----------
    form : Constraint, type, None, callable or str

    Returns
    -------
    constraint : Constraint

    Examples
    --------
    >>> from skal.validation import make_constraint
    >>> str(make_constraint("random_state"))
    'None, an int in [0, 4294967295] or a numpy.random.RandomState'
    >>> make_constraint(None).is_satisfied_by(None)
    True
    """
    if isinstance(form, Constraint):
        return form
    if form is None:
        return _NoneConstraint()
    if form is callable:
        return _Callable()
    if isinstance(form, str):
        if form not in _NAMED:
            raise ValueError(f"unknown constraint {form!r}; known: {sorted(_NAMED)}")
        return _NAMED[form]()
    if isinstance(form, type):
        return InstanceOf(form)
    raise TypeError(f"cannot make a constraint of {form!r}")


def validate_params(owner: str, params: dict, constraints: dict) -> None:
    """Check each parameter that has constraints; the others are not checked.

    Parameters
    ----------
    owner : str
        The class or function the parameters belong to, as the message
        names it.
    params : dict
        Parameter names to values.
    constraints : dict
        Parameter names to lists of accepted forms.

    Raises
    ------
    TypeError
        If no form admits the value's type.
    ValueError
        If a form admits its type but none accepts the value.

    Examples
    --------
    >>> from skal.validation import Options, validate_params
    >>> validate_params("f", {"m": 1}, {"m": [Options({"a"}), None]})
    Traceback (most recent call last):
    ...
    TypeError: The 'm' parameter of f must be one of {'a'} or None; got 1 of type int.
    """
    for name, forms in constraints.items():
        if name not in params:
            continue
        value = params[name]
        made = [make_constraint(f) for f in forms]
        if any(c.is_satisfied_by(value) for c in made):
            continue
        error = ValueError if any(c.admits_type(value) for c in made) else TypeError
        expected = _or(str(c) for c in made)
        got = repr(value)
        if error is TypeError:
            got += f" of type {_type_name(type(value))}"
        raise error(f"The {name!r} parameter of {owner} must be {expected}; got {got}.")


def check_params(obj) -> None:
    """Check an object's parameters against its ``_parameter_constraints``.

    The owner in the message is the object's class name. The values are read
    as attributes, so that ``__init__`` only stores them (scikit-learn's and
    skorch's rule) and the check runs when the object is used.

    Parameters
    ----------
    obj : object
        With a ``_parameter_constraints`` dict.

    Examples
    --------
    >>> from numbers import Real
    >>> from skal.validation import Interval, check_params
    >>> class Smoother:
    ...     _parameter_constraints = {"alpha": [Interval(Real, 0, 1, closed="both")]}
    ...     def __init__(self, alpha=0.5):
    ...         self.alpha = alpha
    >>> check_params(Smoother(alpha=2.0))
    Traceback (most recent call last):
    ...
    ValueError: The 'alpha' parameter of Smoother must be a float in [0, 1]; got 2.0.
    """
    constraints = getattr(obj, "_parameter_constraints", {})
    params = {name: getattr(obj, name) for name in constraints if hasattr(obj, name)}
    validate_params(type(obj).__name__, params, constraints)


def validate_arguments(constraints: dict):
    """Decorate a function so that its arguments are checked at each call.

    Parameters
    ----------
    constraints : dict
        Argument names (of the function's signature) to lists of accepted
        forms.

    Returns
    -------
    decorator : callable

    Examples
    --------
    >>> from skal.validation import validate_arguments
    >>> @validate_arguments({"n": [int]})
    ... def f(n):
    ...     return n
    >>> f("3")
    Traceback (most recent call last):
    ...
    TypeError: The 'n' parameter of f must be an instance of int; got '3' of type str.
    """

    def decorate(func):
        signature = inspect.signature(func)
        unknown = set(constraints) - set(signature.parameters)
        if unknown:
            raise ValueError(
                f"constraints for {sorted(unknown)}, which {func.__qualname__} "
                "does not take"
            )

        @functools.wraps(func)
        def checked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            validate_params(func.__qualname__, bound.arguments, constraints)
            return func(*args, **kwargs)

        return checked

    return decorate


def _type_name(kind) -> str:
    module = getattr(kind, "__module__", "builtins")
    name = getattr(kind, "__qualname__", repr(kind))
    return name if module == "builtins" else f"{module}.{name}"


def _or(descriptions) -> str:
    items = list(descriptions)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]
