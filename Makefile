# torchgeo-sar-damage: the everyday commands. Each target creates .venv (Python 3.12)
# and installs the project into it when that has not been done yet.

PY312 := $(shell command -v python3.12 2>/dev/null || ls -d $$HOME/.pyenv/versions/3.12*/bin/python 2>/dev/null | tail -n 1)
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= outputs/demo
PYTEST_ARGS ?=

.PHONY: demo test lint format benchmarks clean install docs bad-inputs experiments experiments-quick

$(PYTHON):
	@test -n "$(PY312)" || { echo "error: Python 3.12 not found (install it, e.g. 'pyenv install 3.12')" >&2; exit 2; }
	$(PY312) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e '.[tests,style,docs]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sardamage demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PYTHON) -m pytest --cov=torchgeo_sar_damage --cov-report=term --cov-fail-under=95 $(PYTEST_ARGS)

# the documentation site (every Sphinx and MyST warning is an error; none is
# suppressed); the build writes nothing outside docs/_build
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

# regenerate docs/bad_inputs.md from the catalogue in tests/test_bad_inputs.py
# (tests/test_bad_inputs.py::test_docs_table_is_current fails while it is stale)
bad-inputs: $(STAMP)
	$(PYTHON) tests/test_bad_inputs.py docs/bad_inputs.md

# the paper's study (experiments/study.py): study.{csv,md} and figures in docs/results
# (full configuration) or docs/results/quick; an interrupted study resumes from
# outputs/study/<name>
experiments-quick: $(STAMP)
	$(PYTHON) experiments/study.py --config experiments/study/quick.yaml

experiments: $(STAMP)
	$(PYTHON) experiments/study.py --config experiments/study/full.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-fix .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

benchmarks: $(STAMP)
	$(PYTHON) benchmarks/simulate.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache .mypy_cache .coverage docs/_build
