# Quick start: `make demo` (set up, generate demo data, train, evaluate, infer) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DATA ?= data/demo

.PHONY: venv demo test lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,tracking]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py --data $(DEMO_DATA)

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff check bundle scripts tests
	$(PY) -m ruff format --check bundle scripts tests

format: $(STAMP)
	$(PY) -m ruff format bundle scripts tests
	$(PY) -m ruff check --fix bundle scripts tests

clean:
	rm -rf $(VENV) runs eval outputs .pytest_cache
