"""One pool scored across a Dask cluster.

Inside ``joblib.parallel_backend("dask")`` (the scikit-learn convention for
sending work to a Dask cluster), :meth:`skal.ActiveLearner.query` and
:meth:`~skal.ActiveLearner.utility` split the pool into contiguous row
chunks, one per worker, and score them there; each worker receives one copy
of the fitted classifier (with the labelled set) per call. The client puts
the chunks' results back in row order and does the rest exactly as a single
process would:

- per-sample strategies whose utility is a function of each row alone
  (``row_wise = True``: least confidence, margin, entropy, TiDAL, learning
  loss) return utility chunks; the client concatenates them and takes the
  top n with the learner's random state;
- core-set and BADGE compute their embeddings on the workers and run the
  greedy selection on the client;
- other strategies (random sampling, BALD, dynamicAL, ALBL) run in the
  client process.

Chunk boundaries fall on multiples of the network's inference batch size, so
every forward pass sees the same batches as in one process and the results
are identical, not merely close.
"""

from __future__ import annotations

import numpy as np
import torch
from skorch import NeuralNet

from ._data import n_samples, rows_of, take


def active_client():
    """The Dask client of an active ``joblib.parallel_backend("dask")``, or None."""
    try:
        from joblib.parallel import get_active_backend
    except ImportError:  # pragma: no cover - joblib comes with scikit-learn
        return None
    backend, _ = get_active_backend()
    if not _is_dask(backend) or _on_a_worker():
        return None
    return getattr(backend, "client", None)


def _on_a_worker():
    """Whether this runs inside a Dask task (joblib's dask backend is active
    there too): a task that waited for tasks of its own could deadlock the
    cluster, so nested queries score locally."""
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - dask backend implies distributed
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def _is_dask(backend):
    return type(backend).__name__ == "DaskDistributedBackend"


def chunk_bounds(n, n_chunks, multiple):
    """Split ``range(n)`` into at most ``n_chunks`` contiguous pieces.

    Each boundary is a multiple of ``multiple`` (the inference batch size).
    """
    if n == 0:
        return []
    n_batches = -(-n // multiple)
    per_chunk = -(-n_batches // max(1, n_chunks))
    step = per_chunk * multiple
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def map_rows(client, context, X, fn):
    """``[fn(context, chunk) for chunk in row chunks of X]``, on the workers.

    The context is scattered to every worker; if the cluster loses it (a
    worker holding the only copy died and restarted), it is sent again once
    and the chunks scored again (the same model and chunks: the same
    result). Failures of the cluster itself raise a RuntimeError that says
    what happened; errors raised by ``fn`` on a worker come back as they
    are.

    Parameters
    ----------
    client : distributed.Client
    context : QueryContext
        Sent once to every worker (``learner`` left out).
    X : array-like, tensor or Dataset
    fn : callable
        ``fn(context, X_chunk)``; must be picklable (a module-level function).

    Returns
    -------
    results : list
        One result per chunk, in row order.

    Raises
    ------
    RuntimeError
        If the cluster lost the context twice, a chunk's task killed the
        workers that ran it (``KilledWorker``), or the scheduler could not
        be reached.
    """
    n = n_samples(X)
    workers = sorted(client.scheduler_info()["workers"])
    bounds = chunk_bounds(n, max(1, len(workers)), _batch_size(context))
    # a chunk of an array's rows travels as those rows, not the whole array
    chunks = [rows_of(take(X, np.arange(s, e))) for s, e in bounds]
    portable = context.portable()
    from distributed import CancelledError, KilledWorker

    for attempt in range(1, _ATTEMPTS + 1):
        try:
            # hash=False: a content-hashed key is shared with earlier scatters
            # of the same model, and releasing theirs would cancel these tasks
            shipped = client.scatter(portable, broadcast=True, hash=False)
            # one chunk per worker: left to itself, the scheduler may run
            # both chunks of a two-worker cluster on one worker; a worker
            # that is gone leaves its chunk to the others
            futures = [
                client.submit(
                    _OnCPU(fn),
                    shipped,
                    chunk,
                    pure=False,
                    workers=[workers[i % len(workers)]] if workers else None,
                    allow_other_workers=True,
                )
                for i, chunk in enumerate(chunks)
            ]
            return client.gather(futures)
        except CancelledError as exc:
            if attempt == _ATTEMPTS:
                raise _cluster_error(
                    client,
                    f"the cluster lost the model sent to its workers {attempt} "
                    "times (the workers holding it died or were restarted)",
                    exc,
                ) from exc
        except KilledWorker as exc:
            raise _cluster_error(
                client,
                "a chunk's task killed every worker that ran it (out of "
                "memory? a crash in the model's code?)",
                exc,
            ) from exc
        except OSError as exc:  # CommClosedError, timeouts: no scheduler
            raise _cluster_error(
                client, "the scheduler could not be reached", exc
            ) from exc


# one retry: a worker that died once is restarted by its nanny; one that
# keeps dying is reported rather than retried without end
_ATTEMPTS = 2


def _cluster_error(client, what, exc):
    address = getattr(getattr(client, "scheduler", None), "address", None)
    return RuntimeError(
        f"scoring the pool on the Dask cluster (scheduler {address}) failed: "
        f"{what}; {type(exc).__name__}: {exc}. The learner is unchanged: query "
        "again, or outside joblib.parallel_backend('dask') to score in this "
        "process"
    )


class _OnCPU:
    """Run ``fn`` and move the tensors it returns to the CPU for the trip."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, context, X):
        out = self.fn(context, X)
        if isinstance(out, tuple):
            return tuple(_cpu(o) for o in out)
        return _cpu(out)


def _cpu(x):
    return x.cpu() if isinstance(x, torch.Tensor) else x


def _batch_size(context):
    net = context.estimator
    if isinstance(net, NeuralNet):
        size = (
            getattr(net, "iterator_valid__batch_size", None)
            or getattr(net, "inference_batch_size", None)
            or net.batch_size
        )
        if size and size > 0:
            return int(size)
    return 1
