"""Sphinx configuration of skal's documentation.

The API reference (``api.rst``) is written at build time from the ``__all__``
lists of skal's public modules (:func:`write_api_reference`), so a public name
added to a module appears in the reference without editing the docs.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import skal  # noqa: E402

project = "skal"
author = "skal developers"
copyright = "skal developers"
release = skal.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# Unresolved Python cross-references stay silent (nitpicky is off): the user
# guide names features that other parts of skal may not ship yet.
nitpicky = False

autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_typehints = "none"
autoclass_content = "class"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# numpydoc checks every documented docstring; with -W a failure fails the
# build. The set is what the whole API passes: layout and section order (GL),
# a one-line summary ending with a period (SS), every parameter documented,
# typed and in order (PR), well-formed Returns, Yields and See Also entries.
# Not checked: a docstring of one's own (GL08; an override such as
# ``utility`` or ``forward`` shows the docstring it inherits), extended
# summaries (ES01), Examples and See Also on every
# method (EX01, SA01), a description for every parameter and return value
# (PR07, RT03), a Returns section everywhere (RT01), the type-only first line
# of Returns (RT02; skal names its return values, as scikit-learn does), and
# the wording of summaries (SS02, SS05).
numpydoc_validation_checks = {
    "GL01", "GL02", "GL03", "GL05", "GL06", "GL07", "GL09", "GL10",
    "SS01", "SS03", "SS04", "SS06",
    "PR01", "PR02", "PR03", "PR04", "PR05", "PR06", "PR08", "PR09", "PR10",
    "RT04", "RT05", "YD01", "SA02", "SA03", "SA04",
}  # fmt: skip
# skorch's hooks keep skorch's signatures and are documented there
numpydoc_validation_exclude = {
    r"\.on_(train|epoch|batch)_(begin|end)$",
    r"\.get_loss$",
}

myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = f"skal {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []

sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": "auto_examples",
    # Every plot_*.py (figures) and run_*.py (printed output only) script runs
    # during the build; its printed output and its figures go into the page.
    "filename_pattern": r"/(plot|run)_",
    "only_warn_on_example_error": False,
    "abort_on_example_error": False,
    "capture_repr": (),
    "download_all_examples": False,
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("skal",),
    "remove_config_comments": True,
    "plot_gallery": os.environ.get("SKAL_DOCS_PLOT_GALLERY", "True"),
}


def skip_member(app, what, name, obj, skip, options):
    """Leave out the ``set_*_request`` methods sklearn's metadata routing
    generates on every estimator; they are documented by sklearn."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", skip_member)


# --------------------------------------------------------------- API pages
# Sections of the reference, in this order; modules that do not exist (yet)
# are skipped. Any other module named in ``skal.__all__`` is added after them.
API_MODULES = [
    ("skal", "Estimators"),
    ("skal.nets", "Networks: modules, heads, callbacks, taps"),
    ("skal.strategies", "Query strategies"),
    ("skal.model_selection", "Comparing strategies"),
    ("skal.stopping", "Stopping criteria"),
    ("skal.coldstart", "Label-free first batches"),
    ("skal.datasets", "Datasets"),
    ("skal.validation", "Parameter constraints"),
    ("skal.gradients", "Per-sample gradients"),
    ("skal.pairwise", "Inner products of per-sample gradients"),
    ("skal.ntk", "Neural-tangent-kernel diagnostics"),
    ("skal.label_studio", "Labelling with Label Studio"),
]


def public_names(module) -> list[str]:
    """A module's public API: its ``__all__``, or the public classes and
    functions it defines; submodules are left out (they get a section)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__
        ]
    return [n for n in names if not inspect.ismodule(getattr(module, n, None))]


def api_modules() -> list[tuple[str, str]]:
    listed = dict(API_MODULES)
    for name in skal.__all__:
        if inspect.ismodule(getattr(skal, name, None)):
            listed.setdefault(f"skal.{name}", f"``skal.{name}``")
    found = []
    for modname, title in listed.items():
        try:
            importlib.import_module(modname)
        except ImportError:
            continue
        found.append((modname, title))
    return found


def write_api_reference(path: Path) -> None:
    """Write the autosummary page of every public class and function.

    Each object is documented once, under the first module that exports it
    (``skal.TiDALClassifier``, not again under the module defining it).
    """
    lines = [
        ".. This file is generated by docs/conf.py at build time; do not edit.",
        "",
        ".. _api:",
        "",
        "API reference",
        "=============",
        "",
        "Every public class and function of skal, generated from the modules'",
        "``__all__`` lists.",
        "",
    ]
    seen: set[int] = set()
    for modname, title in api_modules():
        module = importlib.import_module(modname)
        groups: dict[str, list[str]] = {"class": [], "function": [], "data": []}
        for name in sorted(public_names(module), key=str.lower):
            obj = getattr(module, name)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if inspect.isclass(obj):
                groups["class"].append(name)
            elif callable(obj):
                groups["function"].append(name)
            else:
                groups["data"].append(name)
        if not any(groups.values()):
            continue
        heading = f"{title}: ``{modname}``" if "``" not in title else title
        lines += [heading, "-" * len(heading), ""]
        lines += [f".. automodule:: {modname}", "   :no-members:", "   :no-index:", ""]
        lines += [f".. currentmodule:: {modname}", ""]
        for kind, template in (
            ("class", "class.rst"),
            ("function", "function.rst"),
            ("data", "data.rst"),
        ):
            if groups[kind]:
                lines += [
                    ".. autosummary::",
                    "   :toctree: generated/",
                    f"   :template: {template}",
                    "",
                ]
                lines += [f"   {name}" for name in groups[kind]]
                lines.append("")
    text = "\n".join(lines)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# ------------------------------------------------------------ extra pages
# Pages at the top of docs/ that index.rst does not name (e.g. benchmark
# reports added with a feature) go into a generated toctree, so that a new
# page is listed instead of failing the build as "not in any toctree".
KNOWN_PAGES = {
    "index",
    "api",
    "changes",
    "install",
    "quickstart",
    "model_selection",
    "label_studio",
    "sg_execution_times",
}


def write_extra_toctree(path: Path) -> None:
    pages = sorted(
        p.stem
        for p in DOCS.iterdir()
        if p.suffix in (".rst", ".md") and p.stem not in KNOWN_PAGES
    )
    lines = [".. Generated by docs/conf.py: pages index.rst does not name.", ""]
    if pages:
        lines += [".. toctree::", "   :maxdepth: 2", "   :caption: More", ""]
        lines += [f"   {page}" for page in pages]
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


write_api_reference(DOCS / "api.rst")
write_extra_toctree(DOCS / "_extra_toc.inc")
