"""Persistence primitives: durable files, digests, weights and strategy state.

Everything that saves a learner to disk goes through this module: the
simulations' run checkpoints (:mod:`skal.model_selection`) and the labelling
sessions (:class:`skal.LabelingSession`).

Why these formats: a saved directory may be shared (a cluster's file system,
a downloaded experiment), so loading it must never run code. Arrays load
with ``allow_pickle=False`` and weights with ``torch.load(weights_only=True)``;
everything else is JSON. Why checksums: ``torch.load`` does not verify the
zip's CRCs, so flipped bytes in a weights file load silently as other
weights; every file is hashed when written and verified before it is read.

Why the write protocol: a file is written to a unique temporary name in its
directory, flushed and fsynced, renamed over its name, and the directory is
fsynced, so a reader sees the old or the new file, never a part, two writers
never rename each other's half-written files, and the rename survives a
power loss.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from skorch import NeuralNet

from .strategies import DuckTypedStrategy, QueryStrategy, get_strategy

__all__ = [
    "CheckpointError",
    "file_digest",
    "fsync_directory",
    "json_digest",
    "learner_state",
    "load_state_dicts",
    "load_weights",
    "net_modules",
    "restore_arguments",
    "restore_strategy_state",
    "state_dicts",
    "strategy_state",
    "write_file",
]


class CheckpointError(ValueError):
    """A run's checkpoint is damaged, was edited, or was written by other code.

    The message names the run directory; deleting that directory restarts
    the run from scratch (the other runs of the same checkpoint directory
    are not affected).

    Examples
    --------
    >>> from skal.model_selection import CheckpointError
    >>> issubclass(CheckpointError, ValueError)
    True
    """


# ------------------------------------------------------------ network weights
def net_modules(net: NeuralNet) -> dict:
    """The torch modules a skorch net registered (module, extra heads, criteria)."""
    names = list(getattr(net, "_modules", ["module"])) + list(
        getattr(net, "_criteria", [])
    )
    return {
        name: getattr(net, name + "_")
        for name in names
        if isinstance(getattr(net, name + "_", None), torch.nn.Module)
    }


def state_dicts(net: NeuralNet) -> dict:
    """CPU copies of every registered module's ``state_dict``."""
    return {
        name: {k: v.detach().cpu().clone() for k, v in mod.state_dict().items()}
        for name, mod in net_modules(net).items()
    }


def load_state_dicts(net: NeuralNet, states: dict) -> None:
    """Load what :func:`state_dicts` returned into an initialized net."""
    modules = net_modules(net)
    missing = sorted(set(states) - set(modules))
    if missing:
        raise ValueError(
            f"checkpoint holds weights of modules {missing} that the network "
            f"does not have (it has {sorted(modules)})"
        )
    for name, state in states.items():
        modules[name].load_state_dict(state)


# ------------------------------------------------------------- strategy state
def strategy_state(strategy) -> tuple[dict, dict]:
    """A strategy's fitted state as JSON-compatible data plus numeric arrays.

    The fitted state is every attribute whose name ends with ``_`` (and does
    not start with one). Numbers, strings, None and booleans go to the JSON
    part; numeric arrays to the array part (under keys the JSON part refers
    to); lists, tuples and string-keyed dicts of these, and sub-strategies
    (objects with a ``select`` method, such as ALBL's arms), are encoded
    recursively. Nothing needs pickling.

    Parameters
    ----------
    strategy : QueryStrategy

    Returns
    -------
    state : dict
        JSON-compatible (``json.dumps`` writes it).
    arrays : dict of str to ndarray
        For ``numpy.savez``; load them back with ``allow_pickle=False``.

    Raises
    ------
    TypeError
        If an attribute holds anything else; the message names it.

    Examples
    --------
    >>> import numpy as np
    >>> from skal.model_selection import restore_strategy_state, strategy_state
    >>> from skal.strategies import ALBL
    >>> albl = ALBL(["margin", "random"])
    >>> albl._initialize()
    >>> albl.arm_history_.append(1)
    >>> state, arrays = strategy_state(albl)
    >>> fresh = ALBL(["margin", "random"])
    >>> restore_strategy_state(fresh, state, arrays)
    >>> fresh.arm_history_, [type(s).__name__ for s in fresh.strategies_]
    ([1], ['MarginSampling', 'RandomSampling'])
    """
    arrays: dict = {}
    state = {
        name: _encode(value, f"strategy.{name}", arrays)
        for name, value in sorted(vars(_unwrap(strategy)).items())
        if _is_fitted(name)
    }
    return state, arrays


def learner_state(learner) -> tuple[dict, dict]:
    """A fitted learner's query generator and strategy state, to save.

    Parameters
    ----------
    learner : ActiveLearner
        Fitted.

    Returns
    -------
    state : dict
        JSON-compatible: ``{"rng": ..., "strategy": ...}``.
    arrays : dict of str to ndarray
        The generator's keys and the strategy's arrays, for ``numpy.savez``.
    """
    meta, arrays = strategy_state(learner.strategy_)
    arrays = {"strategy__" + k: v for k, v in arrays.items()}
    kind, keys, pos, has_gauss, cached = learner.random_state_.get_state()
    arrays["rng_keys"] = np.asarray(keys)
    rng = {
        "kind": kind,
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    return {"rng": rng, "strategy": meta}, arrays


def restore_arguments(state: dict, arrays: dict) -> dict:
    """What :func:`learner_state` saved, as the ``random_state`` and
    ``strategy_state`` arguments of :meth:`skal.ActiveLearner.restore`."""
    rng = state["rng"]
    return {
        "random_state": (
            rng["kind"],
            arrays["rng_keys"],
            rng["pos"],
            rng["has_gauss"],
            rng["cached_gaussian"],
        ),
        "strategy_state": (
            state["strategy"],
            {
                k[len("strategy__") :]: v
                for k, v in arrays.items()
                if k.startswith("strategy__")
            },
        ),
    }


def restore_strategy_state(strategy, state: dict, arrays: dict) -> None:
    """Put what :func:`strategy_state` returned back into ``strategy``.

    ``strategy`` is a fresh (or fitted) object configured like the saved one.
    Sub-strategies are rebuilt from its parameters when it has not built
    them yet, then given their own saved state.

    Parameters
    ----------
    strategy : QueryStrategy
    state : dict
    arrays : dict of str to ndarray

    Raises
    ------
    ValueError
        If the state does not fit the strategy (another configuration).
    """
    strategy = _unwrap(strategy)
    for name, node in state.items():
        current = getattr(strategy, name, None)
        setattr(strategy, name, _decode(node, arrays, current, strategy, name))


def _is_fitted(name):
    return name.endswith("_") and not name.startswith("_")


def _is_strategy(value):
    # a sub-strategy: wrapped by get_strategy, or a bare duck-typed object a
    # strategy keeps itself
    return isinstance(value, QueryStrategy) or (
        callable(getattr(value, "select", None)) and not isinstance(value, type)
    )


def _unwrap(strategy):
    """The object whose attributes hold the state: a duck-typed strategy's
    own, not its adapter's."""
    return strategy.strategy if isinstance(strategy, DuckTypedStrategy) else strategy


def _class_path(obj):
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode(value, key, arrays):
    if value is None or isinstance(value, bool | np.bool_ | str):
        return {"value": value if not isinstance(value, np.bool_) else bool(value)}
    if isinstance(value, numbers.Integral):
        return {"int": int(value)}
    if isinstance(value, numbers.Real):
        return {"float": float(value)}
    if isinstance(value, np.ndarray) and value.dtype != object:
        arrays[key] = value
        return {"array": key}
    if isinstance(value, list | tuple):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, f"{key}.{k}", arrays) for k, v in value.items()}}
    if _is_strategy(value):
        value = _unwrap(value)
        sub = {
            name: _encode(v, f"{key}.{name}", arrays)
            for name, v in sorted(vars(value).items())
            if _is_fitted(name)
        }
        return {"strategy": _class_path(value), "state": sub}
    raise TypeError(
        f"strategy attribute {key[len('strategy.') :]!r} holds a "
        f"{type(value).__name__}, which a checkpoint cannot store without "
        "pickling; checkpoints store numbers, strings, None, numeric arrays, "
        "sub-strategies and lists, tuples or str-keyed dicts of these. Keep the "
        "strategy's state in those types, or run without checkpoint_dir"
    )


def _decode(node, arrays, current, owner, name):
    (kind,) = set(node) - {"state"}
    if kind in ("value", "int", "float"):
        return node[kind]
    if kind == "array":
        return arrays[node["array"]]
    if kind == "dict":
        current = current if isinstance(current, dict) else {}
        return {
            k: _decode(v, arrays, current.get(k), owner, name)
            for k, v in node["dict"].items()
        }
    if kind in ("list", "tuple"):
        items = node[kind]
        # the owner has not built its sub-strategies yet (a fresh fit)
        if not (isinstance(current, list | tuple) and len(current) == len(items)):
            current = _templates(owner, items) or [None] * len(items)
        out = [
            _decode(v, arrays, c, owner, name)
            for v, c in zip(items, current, strict=True)
        ]
        return out if kind == "list" else tuple(out)
    # a sub-strategy: restore into the object the owner built, or a template
    if current is None or _class_path(_unwrap(current)) != node["strategy"]:
        raise ValueError(
            f"the saved state of {type(owner).__name__}.{name} holds a "
            f"{node['strategy']} that the strategy, as configured, does not build"
        )
    restore_strategy_state(current, node["state"], arrays)
    return current


def _templates(owner, items):
    """Fresh sub-strategies for a saved list of them, built from a list-valued
    parameter of ``owner`` whose strategies have the saved classes (ALBL's
    ``strategies`` for its ``strategies_``)."""
    wanted = [item.get("strategy") for item in items]
    if None in wanted:
        return None
    for value in owner.get_params(deep=False).values():
        if isinstance(value, str) or not isinstance(value, list | tuple):
            continue
        try:
            built = [get_strategy(v) for v in value]
        except (TypeError, ValueError):
            continue
        if [_class_path(_unwrap(s)) for s in built] == wanted:
            return [clone(s) for s in built]
    return None


# --------------------------------------------------------------- file writing
def write_file(path, write) -> str:
    """Write a file atomically; return the SHA-256 of what was written.

    ``write(fh)`` writes to a binary file object. The bytes go to a unique
    temporary file in the same directory, are flushed to disk, hashed and
    renamed over ``path``, so readers see the old or the new file, never a
    part, and concurrent writers never rename each other's temporary file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp's 0600 would hide the file from a group sharing the
        # directory: the mode an ordinary open would give instead
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # hashed from disk: zip writers seek back, so the stream is not the file
        digest = file_digest(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return digest


def fsync_directory(directory) -> None:
    """Make a rename or a new file in ``directory`` durable.

    ``fsync`` of a file makes its bytes durable, not its directory entry: a
    power loss right after ``os.replace`` can bring back the old name. The
    directory itself is fsynced (where the platform can open one).
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def file_digest(path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def json_digest(state: dict) -> str:
    """The SHA-256 of a JSON-compatible value's canonical form (sorted keys)."""
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def load_weights(path, digest, where) -> dict:
    """Load a ``torch.save`` of state dicts, verified and without running code.

    Parameters
    ----------
    path : path-like
    digest : str
        The SHA-256 recorded when the file was written.
    where : str
        What the file belongs to, for the error message.

    Raises
    ------
    CheckpointError
        If the file is missing, does not match ``digest``, or holds anything
        but tensors (``torch.load(weights_only=True)`` refuses it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: its file {path.name} is missing")
    if file_digest(path) != digest:
        raise CheckpointError(
            f"{where}: its file {path.name} does not match the checksum recorded "
            "when it was written (corrupted, truncated or replaced)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling refusal or zip error
        raise CheckpointError(
            f"{where}: {path.name} is not a file of tensors and is not loaded "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        ) from None
