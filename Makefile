# Two commands set everything up on a fresh machine:
#   make demo   runs the main example (installs .venv the first time)
#   make test   runs ruff and the test suite (installs .venv the first time)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,dask]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/plot_uncertainty_digits.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
