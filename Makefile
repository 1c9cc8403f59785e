# Two commands set everything up on a fresh machine:
#   make demo   runs the main example, dynamicAL and TiDAL against the baselines
#               on digits, and saves demo_digits.png (installs .venv the first time)
#   make test   runs ruff and the test suite (installs .venv the first time)
#   make docs   builds the documentation into docs/_build/html (warnings are
#               errors; installs the docs extra into .venv the first time)
#   make test-label-studio
#               runs the tests against a real Label Studio server and a
#               headless Chromium: installs Label Studio into its own cached
#               environment ($(LS_VENV)) and Debian's chromium the first
#               time; the tests start and stop the server themselves
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test lint install docs clean label-studio chromium test-label-studio

# Label Studio lives in an environment of its own (it pins numpy, Django and
# ~150 other packages that skal's environment must not get)
LS_VERSION ?= 1.23.2
LS_VENV ?= $(HOME)/.cache/skal/label-studio-venv
LS_STAMP := $(LS_VENV)/.installed-$(LS_VERSION)
LS_TEST_STAMP := $(VENV)/.installed-label-studio-tests

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

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet label-studio==$(LS_VERSION)
	touch $(LS_STAMP)

label-studio: $(LS_STAMP)

# Debian's Chromium for the browser test (never a browser download)
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

$(LS_TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,dask,label-studio-tests]"
	touch $(LS_TEST_STAMP)

test-label-studio: $(LS_TEST_STAMP) $(LS_STAMP) chromium
	SKAL_TEST_LABEL_STUDIO=1 SKAL_LABEL_STUDIO=$(LS_VENV)/bin/label-studio \
		OMP_NUM_THREADS=1 $(PY) -m pytest -q -m label_studio tests/label_studio

clean:
	rm -rf $(VENV) demo_digits.png .pytest_cache .ruff_cache .hypothesis docs/_build \
		docs/generated \
		docs/auto_examples docs/api.rst docs/sg_execution_times.rst
