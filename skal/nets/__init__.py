"""Networks: skorch classifiers, the torch modules they train, and their plumbing.

- estimators: :class:`NeuralNetClassifier` (a skorch classifier for active
  learning), :class:`TiDALClassifier` and :class:`LLossClassifier` (the same,
  trained jointly with an auxiliary head);
- torch modules: reference backbones (:class:`MLP`, :class:`SmallCNN`,
  :class:`TutorialCNN`, :class:`ResNet18`, :class:`VGG11BN`) and the
  auxiliary head (:class:`AuxiliaryHead`);
- training plumbing: the callback :class:`TrainUntilConvergence` and
  :class:`LayerTap`, which reads named layers through forward hooks.
"""

from ._classifier import NeuralNetClassifier
from ._headnets import LLossClassifier, TiDALClassifier
from .callbacks import TrainUntilConvergence
from .heads import AuxiliaryHead, global_average_pool, pairwise_ranking_loss
from .models import MLP, VGG11BN, BasicBlock, ResNet18, SmallCNN, TutorialCNN
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
    "find_module",
    "global_average_pool",
    "last_linear_name",
    "pairwise_ranking_loss",
]
