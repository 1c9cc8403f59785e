"""Counting the inference batches a query reads, for progress bars.

Every inference loader of a :class:`skal.NeuralNetClassifier` (predictions,
embeddings, tapped features, BALD's dropout passes, dynamicAL's and BADGE's
gradient passes, the head nets' outputs) is built in one place and passed
through :func:`observed`; inside :func:`observe_inference_batches` each
batch it yields calls the observer once. Strategies therefore report their
passes without doing anything: whatever reads batches through the network
is counted. The observer belongs to the calling thread (a ``ContextVar``),
so simulations run in threads side by side count their own batches; batches
scored on Dask workers are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

_observer: ContextVar[Callable[[], None] | None] = ContextVar(
    "skal_inference_batch_observer", default=None
)


@contextmanager
def observe_inference_batches(callback: Callable[[], None]):
    """Call ``callback()`` once per inference batch read inside the block."""
    token = _observer.set(callback)
    try:
        yield
    finally:
        _observer.reset(token)


def observed(loader):
    """``loader``, counted batch by batch when an observer is active."""
    callback = _observer.get()
    if callback is None:
        return loader
    return _ObservedLoader(loader, callback)


class _ObservedLoader:
    """Iterates ``loader``, calling ``callback()`` after each batch is read;
    every other attribute (``batch_size``, ``dataset``, ``len``) is the
    loader's."""

    def __init__(self, loader, callback):
        self.loader = loader
        self.callback = callback

    def __iter__(self):
        for batch in self.loader:
            self.callback()
            yield batch

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        if name in ("loader", "callback"):  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)
