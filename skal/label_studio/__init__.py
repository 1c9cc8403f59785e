"""Labelling with Label Studio: skal decides what people label next.

Label Studio holds the answers; a :class:`~skal.LabelingSession` holds the
model. Two ways to connect them, both through Label Studio's HTTP API
(plain ``requests``; install with ``pip install "skal[label-studio]"``):

- :func:`sync`, one round at a time: pull the annotations into the
  session, train, push skal's next picks as predictions that Label
  Studio's label stream serves in skal's order;
- :func:`serve`, a live ML backend (``python -m skal.label_studio serve``)
  that records each annotation as it is submitted, retrains in the
  background and keeps Label Studio's order up to date.

:class:`ImageFolder` makes a folder of images a pool; its files become
Label Studio tasks (served through Label Studio's local storage) that
carry their pool row as ``pool_index``.
"""

from ._backend import Backend, create_app, serve
from ._client import (
    ChoicesSchema,
    LabelStudioClient,
    LabelStudioError,
    image_classification_config,
)
from ._local import LocalLabelStudio
from ._pool import ImageFolder
from ._sync import SyncReport, sync

__all__ = [
    "Backend",
    "ChoicesSchema",
    "ImageFolder",
    "LabelStudioClient",
    "LabelStudioError",
    "LocalLabelStudio",
    "SyncReport",
    "create_app",
    "image_classification_config",
    "serve",
    "sync",
]
