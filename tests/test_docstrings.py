"""The public docstrings pass the numpydoc checks the documentation build
enforces (``docs/conf.py``), so that ``make test`` fails where ``make docs``
would: the same checks, on every public class, its own documented members,
and every public function."""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import skal

validate = pytest.importorskip("numpydoc.validate").validate

CONF = Path(__file__).resolve().parents[1] / "docs" / "conf.py"


def _conf_value(name):
    for node in ast.parse(CONF.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} is not assigned in {CONF}")


CHECKS = _conf_value("numpydoc_validation_checks")
EXCLUDE = [re.compile(p) for p in _conf_value("numpydoc_validation_exclude")]


def _modules():
    # the modules the API reference documents: docs/conf.py's list and the
    # submodules skal exports
    names = ["skal"] + [name for name, _ in _conf_value("API_MODULES")]
    names += [f"skal.{n}" for n in skal.__all__ if inspect.ismodule(getattr(skal, n))]
    names = list(dict.fromkeys(names))
    out = []
    for name in names:
        try:
            out.append(importlib.import_module(name))
        except ImportError:  # an optional extra that is not installed
            continue
    return out


def _own_members(cls):
    # what autodoc's :members: shows: public, documented, defined on the class
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        func = value.fget if isinstance(value, property) else value
        func = getattr(func, "__func__", func)
        if callable(func) and func.__doc__:
            yield name


def _documented():
    seen = set()
    for module in _modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            path = f"{module.__name__}.{name}"
            yield path
            if inspect.isclass(obj):
                yield from (f"{path}.{m}" for m in _own_members(obj))


DOCUMENTED = sorted(set(_documented()))


def test_the_public_api_is_found():
    assert "skal.ActiveLearner.query" in DOCUMENTED
    assert "skal.strategies.QueryContext.portable" in DOCUMENTED
    assert len(DOCUMENTED) > 100


@pytest.mark.parametrize("path", DOCUMENTED)
def test_docstring_passes_the_docs_checks(path):
    if any(p.search(path) for p in EXCLUDE):
        pytest.skip("excluded in docs/conf.py")
    errors = [
        f"{code}: {message}"
        for code, message in validate(path)["errors"]
        if code in CHECKS
    ]
    assert not errors, "\n".join(errors)
