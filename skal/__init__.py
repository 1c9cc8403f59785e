"""skal: deep active learning for scikit-learn.

skal has four parts:

- :class:`ActiveLearner` (``skal.learner``), the sklearn meta-estimator that
  owns the labelled set and the loop: ``fit``, ``query``, ``teach``;
- ``skal.nets``, skorch classifiers that warm-start across rounds, the torch
  modules they train and the heads of TiDAL and learning loss;
- ``skal.strategies``, the query strategies and their registry;
- ``skal.model_selection``, simulations, learning curves and comparisons of
  strategies on labelled data.

:class:`DictDataset` reads datasets whose items are dicts (Hugging Face
``datasets``) with named input and label columns.
:class:`LabelingSession` (``skal.session``) runs the loop with a person as
the oracle, saved to a directory and resumable at any moment.

``skal.stopping`` says when to stop asking for labels, and ``skal.coldstart``
picks a first batch when nothing is labelled yet.

``skal.gradients`` and ``skal.ntk`` hold the per-sample gradient machinery
of dynamicAL and the neural-tangent-kernel diagnostics; ``skal.datasets``
loads the data sets the examples and benchmarks use.
"""

from . import (
    coldstart,
    datasets,
    gradients,
    model_selection,
    nets,
    ntk,
    stopping,
    strategies,
)
from ._items import DictDataset
from ._version import __version__ as __version__
from .learner import ActiveLearner
from .nets import LLossClassifier, NeuralNetClassifier, TiDALClassifier
from .session import LabelingSession, SessionLockedError

__all__ = [
    "ActiveLearner",
    "DictDataset",
    "LLossClassifier",
    "LabelingSession",
    "SessionLockedError",
    "NeuralNetClassifier",
    "TiDALClassifier",
    "coldstart",
    "datasets",
    "gradients",
    "model_selection",
    "nets",
    "ntk",
    "stopping",
    "strategies",
]
