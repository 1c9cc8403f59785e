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
    leaf = _leaf_token(value)
    if leaf is not _COMPOSITE:
        return leaf
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return "<cycle>"
    seen = seen | {id(value)}
    for kinds, describe in _COMPOSITE_TOKENS:
        if isinstance(value, kinds):
            return describe(value, path, seen)
    return _object_token(value, path, seen)


# what _leaf_token returns for values described by their parts
_COMPOSITE = object()


def _leaf_token(value):
    """The token of a value without parts (numbers, strings, arrays, classes)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return _array_token(value)
    if isinstance(value, type):
        return f"class {value.__module__}.{value.__qualname__}"
    return _COMPOSITE


def _dict_token(value, path, seen):
    return sorted(
        [repr(k), stable_token(v, f"{path}[{k!r}]", seen)] for k, v in value.items()
    )


def _function_token(value, path, seen):
    # a closure's captured values and the defaults are part of what it does
    cells = [c.cell_contents for c in value.__closure__ or ()]
    return {
        "function": f"{value.__module__}.{value.__qualname__}",
        "closure": stable_token(cells, f"{path} (closure)", seen),
        "defaults": stable_token(value.__defaults__, path, seen),
        "kwdefaults": stable_token(value.__kwdefaults__, path, seen),
    }


_COMPOSITE_TOKENS = (
    (
        list | tuple,
        lambda v, path, seen: [
            stable_token(x, f"{path}[{i}]", seen) for i, x in enumerate(v)
        ],
    ),
    (dict, _dict_token),
    (
        set | frozenset,
        lambda v, path, seen: sorted(repr(stable_token(x, path, seen)) for x in v),
    ),
    (
        functools.partial,
        lambda v, path, seen: {
            "partial": stable_token(v.func, path, seen),
            "args": stable_token(v.args, path, seen),
            "keywords": stable_token(v.keywords, path, seen),
        },
    ),
    (
        types.MethodType,
        lambda v, path, seen: {
            "method": v.__func__.__qualname__,
            "self": stable_token(v.__self__, path, seen),
        },
    ),
    (types.FunctionType, _function_token),
    (
        types.BuiltinFunctionType | types.ModuleType,
        lambda v, path, seen: f"{getattr(v, '__module__', '')}.{v.__name__}",
    ),
)


def _object_token(value, path, seen):
    """Any other object: estimators by their parameters, modules by their
    state, plain objects by their attributes, the rest by repr or pickle."""
    cls = f"{type(value).__module__}.{type(value).__qualname__}"
    if hasattr(value, "get_params") and not isinstance(value, torch.nn.Module):
        return {
            "object": cls,
            "params": stable_token(value.get_params(deep=False), path, seen),
        }
    if isinstance(value, torch.nn.Module):
        # the weights, and the settings a module keeps as attributes (a
        # torchvision v2 transform has no weights: its padding, size and
        # angles are all it is), its submodules' included
        settings = {k: v for k, v in vars(value).items() if not k.startswith("_")}
        return {
            "module": cls,
            "state": stable_token(value.state_dict(), path, seen),
            "settings": stable_token(settings, path, seen),
            "children": stable_token(dict(value.named_children()), path, seen),
        }
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
    if value is None or isinstance(
        value, bool | int | float | str | np.ndarray | np.generic | torch.Tensor
    ):
        return
    if isinstance(value, type | types.FunctionType):
        out[path] = _code_hash(value)
        return
    if id(value) in seen:
        return
    seen.add(id(value))
    if not isinstance(value, _CONTAINERS) and (
        hasattr(value, "__dict__") or _is_estimator(value)
    ):
        out[f"{path} (class)"] = _code_hash(type(value))
    for child_path, child in _code_parts(value, path):
        _collect_code(child, child_path, out, seen)


def _code_parts(value, path):
    """The parts of ``value`` that may hold code: items, a partial's or a
    method's function, an estimator's parameters."""
    if isinstance(value, list | tuple):
        return [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return [(f"{path}[{k!r}]", v) for k, v in value.items()]
    if isinstance(value, functools.partial):
        return [(path, value.func)]
    if isinstance(value, types.MethodType):
        return [(path, value.__func__)]
    if _is_estimator(value):
        return [(f"{path}__{k}", v) for k, v in value.get_params(deep=False).items()]
    return []


_CONTAINERS = list | tuple | dict | functools.partial | types.MethodType


def _is_estimator(value):
    return hasattr(value, "get_params") and not isinstance(value, torch.nn.Module)


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
