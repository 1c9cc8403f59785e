"""Per-round checkpoints of a simulated active-learning run.

A run directory holds ``state.json`` (the commit point: round, scores, the
learner's random state, the strategy's fitted state, a fingerprint of the
code and a SHA-256 checksum of every other file of the round), an ``.npz``
file with the arrays (labelled rows in labelling order, random generator
keys, array-valued strategy state) and, for network learners, a
``torch.save`` of the modules' ``state_dict``.

Why these formats: a checkpoint directory may be shared (a cluster's file
system, a downloaded experiment), so loading it must never run code. Arrays
load with ``allow_pickle=False`` and weights with
``torch.load(weights_only=True)``; everything else is JSON. Why checksums:
``torch.load`` does not verify the zip's CRCs, so flipped bytes in a weights
file load silently as other weights; every file is hashed when written and
verified before anything is read, and ``state.json`` carries a checksum of
its own content.

Why the write order: files of a round are written first, each to a unique
temporary name and then renamed, and ``state.json`` is replaced last, so a
run killed at any moment leaves the previous round's complete checkpoint
behind, and two processes writing the same run never rename each other's
half-written files.

Strategy state is saved with :func:`strategy_state` and put back with
:func:`restore_strategy_state`, functions that other resumable loops (a
labelling session) can use on their own.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import marshal
import numbers
import os
import re
import tempfile
import types
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.base import clone
from skorch import NeuralNet

FORMAT = 2
_STATE = "state.json"
# the only names a run writes; anything else named in state.json is refused
_FILE_NAME = re.compile(r"(state-r\d+\.npz|weights-r\d+\.pt)")


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


def _unusable(directory, reason) -> CheckpointError:
    return CheckpointError(
        f"cannot resume the run checkpointed in {directory}: {reason}. Delete "
        f"that directory to restart this run from scratch (other runs are not "
        "affected)"
    )


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
        for name, value in sorted(vars(strategy).items())
        if _is_fitted(name)
    }
    return state, arrays


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
    for name, node in state.items():
        current = getattr(strategy, name, None)
        setattr(strategy, name, _decode(node, arrays, current, strategy, name))


def _is_fitted(name):
    return name.endswith("_") and not name.startswith("_")


def _is_strategy(value):
    return callable(getattr(value, "select", None)) and not isinstance(value, type)


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
    if current is None or _class_path(current) != node["strategy"]:
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
    from ..strategies import get_strategy

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
        if [_class_path(s) for s in built] == wanted:
            return [clone(s) if hasattr(s, "get_params") else s for s in built]
    return None


# ---------------------------------------------------------------- run keys
def stable_token(value, path="value", _seen=None):
    """A JSON-compatible description of ``value`` that is equal in every
    process for equal parameters.

    ``joblib.hash`` pickles functions by reference, so a lambda or a closure
    hashes differently in each process and a rerun would never find its
    checkpoint. Here classes and functions are named by module and qualified
    name, with a closure's captured values and a function's defaults
    included; estimators by their class and ``get_params``; other objects by
    their attributes; arrays and tensors by a hash of their bytes.

    Raises
    ------
    TypeError
        If some part has no stable description (no attributes, a ``repr``
        holding a memory address, and it cannot be pickled); the message
        names the parameter.
    """
    seen = set() if _seen is None else _seen
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return _array_token(value)
    if isinstance(value, type):
        return f"class {value.__module__}.{value.__qualname__}"
    if id(value) in seen:
        return "<cycle>"
    seen = seen | {id(value)}
    if isinstance(value, list | tuple):
        return [stable_token(v, f"{path}[{i}]", seen) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return sorted(
            (
                [repr(k), stable_token(v, f"{path}[{k!r}]", seen)]
                for k, v in value.items()
            ),
        )
    if isinstance(value, set | frozenset):
        return sorted(repr(stable_token(v, path, seen)) for v in value)
    if isinstance(value, functools.partial):
        return {
            "partial": stable_token(value.func, path, seen),
            "args": stable_token(value.args, path, seen),
            "keywords": stable_token(value.keywords, path, seen),
        }
    if isinstance(value, types.MethodType):
        return {
            "method": value.__func__.__qualname__,
            "self": stable_token(value.__self__, path, seen),
        }
    if isinstance(value, types.FunctionType):
        cells = [c.cell_contents for c in value.__closure__ or ()]
        return {
            "function": f"{value.__module__}.{value.__qualname__}",
            "closure": stable_token(cells, f"{path} (closure)", seen),
            "defaults": stable_token(value.__defaults__, path, seen),
            "kwdefaults": stable_token(value.__kwdefaults__, path, seen),
        }
    if isinstance(value, types.BuiltinFunctionType | types.ModuleType):
        return f"{getattr(value, '__module__', '')}.{value.__name__}"
    cls = f"{type(value).__module__}.{type(value).__qualname__}"
    if hasattr(value, "get_params") and not isinstance(value, torch.nn.Module):
        return {
            "object": cls,
            "params": stable_token(value.get_params(deep=False), path, seen),
        }
    if isinstance(value, torch.nn.Module):
        return {"module": cls, "state": stable_token(value.state_dict(), path, seen)}
    if isinstance(value, torch.device | torch.dtype | np.dtype):
        return str(value)
    if hasattr(value, "__dict__"):
        return {"object": cls, "attributes": stable_token(vars(value), path, seen)}
    text = repr(value)
    if not re.search(r" at 0x[0-9a-fA-F]+", text):
        return {"object": cls, "repr": text}
    try:  # e.g. a RandomState: pickled by value, so hashed by its state
        return {"object": cls, "pickle": joblib.hash(value)}
    except Exception:  # any pickling failure: no stable description
        raise TypeError(
            f"cannot name checkpoints of a run whose {path} holds a "
            f"{type(value).__name__} ({text}): it has no description that stays "
            "the same across processes, so a rerun would not find its "
            "checkpoint. Use a named function or a picklable object instead, "
            "or run without checkpoint_dir"
        ) from None


def _array_token(value):
    if isinstance(value, torch.nn.parameter.UninitializedParameter):
        return "uninitialized parameter"
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    value = np.ascontiguousarray(value)
    if value.dtype == object:
        return ["object array", repr(value.tolist())]
    h = hashlib.sha256(str((value.dtype.str, value.shape)).encode())
    h.update(value.data)
    return h.hexdigest()


def code_fingerprints(params: dict) -> dict:
    """A hash of the code of every class and function among ``params``.

    Walks the parameters (and the parameters of estimators among them, such
    as a learner's network, strategy and callbacks) and hashes, for each
    class or function found and for the class of each object found, its
    source (``inspect.getsource``), or its compiled code when the source is
    not available (e.g. code run with ``python -c``). Only the code of the
    classes and functions themselves is covered, not the code they call.

    Parameters
    ----------
    params : dict
        Named values, e.g. ``{"learner": learner, "scoring": scoring}``.

    Returns
    -------
    fingerprints : dict of str to str
        Parameter path to a 16-hex-digit hash, in a stable order.
    """
    out: dict = {}
    for name, value in params.items():
        _collect_code(value, name, out, set())
    return dict(sorted(out.items()))


def _collect_code(value, path, out, seen):
    if value is None or isinstance(value, bool | int | float | str | np.ndarray):
        return
    if isinstance(value, torch.Tensor | np.generic):
        return
    if isinstance(value, type | types.FunctionType):
        out[path] = _code_hash(value)
        return
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _collect_code(v, f"{path}[{i}]", out, seen)
    elif isinstance(value, dict):
        for k, v in value.items():
            _collect_code(v, f"{path}[{k!r}]", out, seen)
    elif isinstance(value, functools.partial):
        _collect_code(value.func, path, out, seen)
    elif isinstance(value, types.MethodType):
        _collect_code(value.__func__, path, out, seen)
    elif hasattr(value, "get_params") and not isinstance(value, torch.nn.Module):
        out[f"{path} (class)"] = _code_hash(type(value))
        for k, v in value.get_params(deep=False).items():
            _collect_code(v, f"{path}__{k}", out, seen)
    elif hasattr(value, "__dict__"):
        out[f"{path} (class)"] = _code_hash(type(value))


@functools.lru_cache(maxsize=512)
def _code_hash(obj) -> str:
    try:
        text = inspect.getsource(obj).encode()
    except (OSError, TypeError):
        text = _compiled(obj)
    return hashlib.sha256(text).hexdigest()[:16]


def _compiled(obj) -> bytes:
    """Compiled code of a function, or of a class's methods, when no source
    file exists; for C-implemented objects, their qualified name."""
    if isinstance(obj, types.FunctionType):
        return marshal.dumps(obj.__code__)
    parts = [f"{getattr(obj, '__module__', '')}.{obj.__qualname__}".encode()]
    if isinstance(obj, type):
        for name, member in sorted(vars(obj).items()):
            member = getattr(member, "__func__", member)
            if isinstance(member, property):
                member = member.fget
            if isinstance(member, types.FunctionType):
                parts.append(name.encode() + marshal.dumps(member.__code__))
    return b"\0".join(parts)


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
    return digest


def file_digest(path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_digest(state: dict) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ the run
class RunCheckpoint:
    """Reads and writes the checkpoints of one simulated run.

    Parameters
    ----------
    directory : path-like
        The run's own directory (created on first save).
    keep_weights : bool, default=False
        Keep every round's weights (needed to rebuild the per-round models of
        :class:`ActiveLearningSimulation`); otherwise only the latest.
    code : dict or None, default=None
        Fingerprints of the code the run depends on
        (:func:`code_fingerprints`); recorded at each save and compared at
        load, so that a run never resumes with edited code.
    """

    def __init__(self, directory, keep_weights: bool = False, code=None):
        self.directory = Path(directory)
        self.keep_weights = keep_weights
        self.code = code
        self._files: dict = {}

    def load(self) -> dict | None:
        """The latest committed state, or None if the run has not started.

        Raises
        ------
        CheckpointError
            If a file is missing, truncated or modified, names a path outside
            the run directory, or the code changed since the run was saved.
        """
        path = self.directory / _STATE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_bytes())
            checksum = state.pop("checksum")
        except (ValueError, UnicodeDecodeError, AttributeError, KeyError):
            raise _unusable(
                self.directory, f"{_STATE} is not a complete checkpoint index "
                "(truncated or edited)"
            ) from None  # fmt: skip
        # Before reading anything the index names: an edited index could
        # point at other files or carry other scores.
        if checksum != _json_digest(state):
            raise _unusable(
                self.directory, f"{_STATE} was modified after it was written"
            )
        if state.get("format") != FORMAT:
            raise _unusable(
                self.directory,
                f"it has format {state.get('format')!r}; this version of skal "
                f"reads format {FORMAT}",
            )
        if self.code is not None and state["code"] != self.code:
            saved = state["code"]
            changed = sorted(
                k
                for k in set(saved) | set(self.code)
                if saved.get(k) != self.code.get(k)
            )
            raise _unusable(
                self.directory,
                f"the code of {changed} differs from the code that wrote it (the "
                "run key names classes and functions, the checkpoint also "
                "records their source); resuming would mix two models in one curve",
            )
        files = state["files"]
        for name in (state["arrays"], state["weights"]):
            if name is not None and name not in files:
                raise _unusable(
                    self.directory, f"{_STATE} records no checksum for {name!r}"
                )
        # Every file, also the earlier rounds' weights that snapshots load
        # later: a damaged run fails here, before any training or scoring.
        for name, digest in files.items():
            self._verify(name, digest)
        self._files = dict(state["files"])
        try:
            with np.load(self.directory / state["arrays"], allow_pickle=False) as npz:
                state["_arrays"] = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:  # pragma: no cover - checksummed
            raise _unusable(self.directory, f"{state['arrays']}: {exc}") from None
        return state

    def _verify(self, name, digest) -> None:
        if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
            raise _unusable(
                self.directory,
                f"{_STATE} names the file {name!r}, which is not a file of the run "
                "directory (only state-r<round>.npz and weights-r<round>.pt are)",
            )
        path = self.directory / name
        if not path.is_file():
            raise _unusable(self.directory, f"its file {name} is missing")
        if file_digest(path) != digest:
            raise _unusable(
                self.directory,
                f"its file {name} does not match the checksum recorded when it "
                "was written (corrupted or truncated)",
            )

    def weights(self, filename: str) -> dict:
        """Load one round's weights safely (``weights_only=True``), verified
        against the checksum recorded for them."""
        if filename not in self._files:
            raise _unusable(
                self.directory, f"{_STATE} records no checksum for {filename}"
            )
        self._verify(filename, self._files[filename])
        return torch.load(
            self.directory / filename, map_location="cpu", weights_only=True
        )

    def save(self, round_, order, scores, learner, net=None) -> None:
        """Commit the state after ``round_`` (0 is the initial fit)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        kind, keys, pos, has_gauss, cached = learner.random_state_.get_state()
        # First, so that state that cannot be stored fails before any file
        # of this round is written.
        meta, arrays = strategy_state(learner.strategy_)
        arrays = {"strategy__" + k: v for k, v in arrays.items()}
        arrays["rng_keys"] = np.asarray(keys)
        arrays["order"] = np.asarray(order, dtype=np.int64)
        files = {
            name: digest
            for name, digest in self._files.items()
            if self.keep_weights and name.startswith("weights-")
        }
        arrays_name = f"state-r{round_}.npz"
        files[arrays_name] = write_file(
            self.directory / arrays_name, lambda fh: np.savez(fh, **arrays)
        )
        weights_name = None
        if net is not None:
            weights_name = f"weights-r{round_}.pt"
            states = state_dicts(net)
            files[weights_name] = write_file(
                self.directory / weights_name, lambda fh: torch.save(states, fh)
            )
        state = {
            "format": FORMAT,
            "round": int(round_),
            "n_labeled": len(order),
            "scores": [float(s) for s in scores],
            "arrays": arrays_name,
            "weights": weights_name,
            "files": files,
            "code": self.code,
            "rng": {
                "kind": kind,
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
            "strategy": meta,
        }
        # The checksum is over the canonical JSON (sorted keys), so it does
        # not depend on the indentation of the file.
        state["checksum"] = _json_digest(state)
        payload = json.dumps(state, indent=1).encode()
        write_file(self.directory / _STATE, lambda fh: fh.write(payload))
        self._files = files
        self._prune()

    def _prune(self) -> None:
        """Delete the run's files that the committed state no longer names.

        Only after the commit: until ``state.json`` is replaced, the previous
        round's files are the checkpoint. Temporary files are never touched,
        since another writer may be about to rename one.
        """
        for path in self.directory.iterdir():
            if _FILE_NAME.fullmatch(path.name) and path.name not in self._files:
                path.unlink(missing_ok=True)

    @staticmethod
    def restore_random_state(learner, state) -> None:
        """Put the saved generator and strategy state back into ``learner``."""
        rng = state["rng"]
        learner.random_state_.set_state(
            (
                rng["kind"],
                state["_arrays"]["rng_keys"],
                rng["pos"],
                rng["has_gauss"],
                rng["cached_gaussian"],
            )
        )
        arrays = {
            k[len("strategy__") :]: v
            for k, v in state["_arrays"].items()
            if k.startswith("strategy__")
        }
        restore_strategy_state(learner.strategy_, state["strategy"], arrays)
