"""skal's version, in a module of its own so that submodules import it
without importing the package's ``__init__`` (pyproject reads it here)."""

__version__ = "0.1.0.dev0"
