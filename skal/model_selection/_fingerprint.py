"""Stable names for runs: parameter tokens and code fingerprints.

A simulated run's checkpoint directory is named by a hash of its data, its
learner's parameters and its settings (:func:`stable_token`), and records a
fingerprint of the code it depends on (:func:`code_fingerprints`), so that a
rerun finds its checkpoint in any process and never resumes with edited code.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import marshal
import re
import types

import joblib
import numpy as np
import torch


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
