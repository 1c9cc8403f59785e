"""Query strategies and their registry.

A strategy is named by a string (see :func:`get_strategy_names`) or passed as
an object. :func:`get_strategy` returns a fresh instance for a name and passes
objects through, like :func:`sklearn.metrics.get_scorer`.
"""

from __future__ import annotations

from ._kcenter import k_center_greedy
from ._kmeanspp import kmeans_pp_gradient
from ._registry import get_strategy, get_strategy_names, register_strategy
from .albl import ALBL, exp4p_probabilities, exp4p_update
from .base import DuckTypedStrategy, QueryStrategy, top_n
from .batch import BatchDynamicAL, StochasticBatch
from .bayesian import BALD, mutual_information
from .context import QueryContext
from .diversity import BADGE, CoreSet, gradient_embedding_factors
from .dynamic_al import DynamicAL
from .lloss import LLoss
from .tidal import TiDAL
from .typiclust import TypiClust
from .uncertainty import (
    EntropySampling,
    LeastConfidence,
    MarginSampling,
    RandomSampling,
)

for _name, _strategy in {
    "random": RandomSampling(),
    "least_confidence": LeastConfidence(),
    "margin": MarginSampling(),
    "entropy": EntropySampling(),
    "coreset": CoreSet(),
    "badge": BADGE(),
    "bald": BALD(),
    "albl": ALBL(),
    "tidal": TiDAL(),
    "lloss": LLoss(),
    "dynamic_al": DynamicAL(),
    "dynamic_al_batch": BatchDynamicAL(),
    "power_entropy": StochasticBatch("entropy", mode="power", beta=1.0),
    "typiclust": TypiClust(),
}.items():
    register_strategy(_name, _strategy)
del _name, _strategy

__all__ = [
    "ALBL",
    "BADGE",
    "BALD",
    "BatchDynamicAL",
    "CoreSet",
    "DuckTypedStrategy",
    "DynamicAL",
    "EntropySampling",
    "LLoss",
    "LeastConfidence",
    "MarginSampling",
    "QueryContext",
    "QueryStrategy",
    "RandomSampling",
    "StochasticBatch",
    "TiDAL",
    "TypiClust",
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
