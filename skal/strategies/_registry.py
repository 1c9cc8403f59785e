"""The registry of query strategies: one dict, looked up by name.

Modelled on sklearn's scorer registry: :func:`get_strategy` returns a fresh
copy for a registered name and passes strategy objects through, and
:func:`get_strategy_names` is the one list that parameter validation, error
messages and the tests' parametrization all use.
"""

from __future__ import annotations

import copy

from .base import DuckTypedStrategy, QueryStrategy

# Filled by skal.strategies with the built-in strategies, and by
# register_strategy.
_STRATEGIES: dict[str, QueryStrategy] = {}


def get_strategy_names() -> list[str]:
    """Names of all registered strategies, sorted.

    Examples
    --------
    >>> from skal.strategies import get_strategy_names
    >>> "entropy" in get_strategy_names()
    True
    """
    return sorted(_STRATEGIES)


def get_strategy(strategy) -> QueryStrategy:
    """A strategy from its registered name, or the object itself.

    Parameters
    ----------
    strategy : str or QueryStrategy
        A registered name, or an object with a ``select`` method.

    Returns
    -------
    strategy : QueryStrategy
        A fresh instance for a name; a :class:`QueryStrategy` unchanged; any
        other object with a ``select`` method wrapped in a
        :class:`DuckTypedStrategy`.

    Examples
    --------
    >>> from skal.strategies import get_strategy
    >>> get_strategy("margin")
    MarginSampling()
    """
    if isinstance(strategy, str):
        try:
            return copy.deepcopy(_STRATEGIES[strategy])
        except KeyError:
            raise ValueError(
                f"strategy={strategy!r} is not a registered strategy; valid names "
                f"are {get_strategy_names()}, or pass a QueryStrategy object"
            ) from None
    if isinstance(strategy, QueryStrategy):
        return strategy
    if callable(getattr(strategy, "select", None)):
        return DuckTypedStrategy(strategy)
    raise TypeError(
        "strategy must be a registered name (one of "
        f"{get_strategy_names()}) or an object with a select method; got "
        f"{type(strategy).__name__}"
    )


def register_strategy(name: str, strategy: QueryStrategy) -> None:
    """Register a strategy instance under a name.

    Parameters
    ----------
    name : str
        The name users pass as ``strategy=``.
    strategy : QueryStrategy
        A default-constructed (or configured) instance, or an object with a
        ``select`` method (wrapped once, here, in a
        :class:`DuckTypedStrategy`); each lookup returns a deep copy of it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(strategy, QueryStrategy) and not callable(
        getattr(strategy, "select", None)
    ):
        raise TypeError(
            f"strategy must have a select method, got {type(strategy).__name__}"
        )
    _STRATEGIES[name] = get_strategy(strategy)
