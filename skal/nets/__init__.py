"""Networks: skorch classifiers, the torch modules they train, and their plumbing.

- estimators: :class:`NeuralNetClassifier` (a skorch classifier for active
  learning), :class:`TiDALClassifier` and :class:`LLossClassifier` (the same,
  trained jointly with an auxiliary head);
- torch modules: reference backbones (:class:`MLP`, :class:`SmallCNN`,
  :class:`TutorialCNN`, :class:`ResNet18`, :class:`VGG11BN`) and the
  auxiliary head (:class:`AuxiliaryHead`);
- training plumbing: the callback :class:`TrainUntilConvergence` and
  :class:`LayerTap`, which reads named layers through forward hooks;
- the papers' training protocols as constructor parameters:
  :func:`dynamic_al_protocol` and :func:`tidal_protocol`.
"""

from ._classifier import NeuralNetClassifier
from ._headnets import LLossClassifier, TiDALClassifier
from .callbacks import TrainUntilConvergence
from .heads import AuxiliaryHead, global_average_pool, pairwise_ranking_loss
from .models import MLP, VGG11BN, BasicBlock, ResNet18, SmallCNN, TutorialCNN
from .protocols import dynamic_al_protocol, tidal_protocol
from .taps import LayerTap, find_module, last_linear_name

__all__ = [
    "MLP",
    "VGG11BN",
    "AuxiliaryHead",
    "BasicBlock",
    "LLossClassifier",
    "LayerTap",
    "NeuralNetClassifier",
    "ResNet18",
    "SmallCNN",
    "TiDALClassifier",
    "TrainUntilConvergence",
    "TutorialCNN",
    "dynamic_al_protocol",
    "find_module",
    "global_average_pool",
    "last_linear_name",
    "pairwise_ranking_loss",
    "tidal_protocol",
]
