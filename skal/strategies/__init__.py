"""Query strategies and their registry.

A strategy is named by a string (see :func:`get_strategy_names`) or passed as
an object. :func:`get_strategy` returns a fresh instance for a name and passes
objects through, like :func:`sklearn.metrics.get_scorer`.
"""

from __future__ import annotations

import copy

from .albl import ALBL, exp4p_probabilities, exp4p_update
from .base import QueryStrategy, top_n
from .bayesian import BALD, mutual_information
from .context import QueryContext
from .diversity import (
    BADGE,
    CoreSet,
    gradient_embedding_factors,
    k_center_greedy,
    kmeans_pp_gradient,
)
from .dynamics import DynamicAL
from .learned import LearningLoss
from .tidal import TiDAL
from .uncertainty import (
    EntropySampling,
    LeastConfidence,
    MarginSampling,
    RandomSampling,
)

_STRATEGIES: dict[str, QueryStrategy] = {
    "random": RandomSampling(),
    "least_confidence": LeastConfidence(),
    "margin": MarginSampling(),
    "entropy": EntropySampling(),
    "coreset": CoreSet(),
    "badge": BADGE(),
    "bald": BALD(),
    "albl": ALBL(),
    "tidal": TiDAL(),
    "lloss": LearningLoss(),
    "dynamic_al": DynamicAL(),
}


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
        A fresh instance for a name; the object unchanged otherwise.

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
    if callable(getattr(strategy, "select", None)):
        return strategy
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
        A default-constructed (or configured) instance; each lookup returns
        a deep copy of it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(getattr(strategy, "select", None)):
        raise TypeError(
            f"strategy must have a select method, got {type(strategy).__name__}"
        )
    _STRATEGIES[name] = strategy


__all__ = [
    "ALBL",
    "BADGE",
    "BALD",
    "CoreSet",
    "DynamicAL",
    "EntropySampling",
    "LearningLoss",
    "LeastConfidence",
    "MarginSampling",
    "QueryContext",
    "QueryStrategy",
    "RandomSampling",
    "TiDAL",
    "exp4p_probabilities",
    "exp4p_update",
    "get_strategy",
    "get_strategy_names",
    "gradient_embedding_factors",
    "k_center_greedy",
    "kmeans_pp_gradient",
    "mutual_information",
    "register_strategy",
    "top_n",
]
