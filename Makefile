# Two commands set everything up on a fresh machine:
#   make demo   runs the main example, dynamicAL and TiDAL against the baselines
#               on digits, and saves demo_digits.png (installs .venv the first time)
#   make test   runs ruff and the test suite (installs .venv the first time)
#   make docs   builds the documentation into docs/_build/html (warnings are
#               errors; installs the docs extra into .venv the first time)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test lint install docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,dask]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/plot_compare_digits.py --figure demo_digits.png

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) demo_digits.png .pytest_cache .ruff_cache .hypothesis docs/_build \
		docs/generated \
		docs/auto_examples docs/api.rst docs/sg_execution_times.rst
