"""skal: deep active learning for scikit-learn.

skal brings deep active learning into the scikit-learn ecosystem: an
:class:`ActiveLearner` meta-estimator with ``fit``/``query``/``teach``,
skorch network classifiers that warm-start across rounds, and query
strategies from the literature.
"""

from . import callbacks, datasets, model_selection, models, strategies
from .headnets import LLossClassifier, TiDALClassifier
from .learner import ActiveLearner
from .nets import NeuralNetClassifier

__version__ = "0.1.0.dev0"

__all__ = [
    "ActiveLearner",
    "LLossClassifier",
    "NeuralNetClassifier",
    "TiDALClassifier",
    "callbacks",
    "datasets",
    "model_selection",
    "models",
    "strategies",
]
