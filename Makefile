# Quick start: `make demo` (set up, generate demo data, train, evaluate, infer) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEPLOY_VENV := .venv-deploy
DEPLOY_PY := $(DEPLOY_VENV)/bin/python
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
DEMO_DATA ?= data/demo

.PHONY: venv demo test deploy-venv deploy-test lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,tracking,onnx,radiomics]"
	$(PY) -m pip install --quiet -c constraints.txt --no-build-isolation pyradiomics==3.0.1
	touch $(STAMP)

# MONAI Deploy app environment, separate from .venv (see requirements-deploy.txt for why).
deploy-venv: $(DEPLOY_STAMP)

$(DEPLOY_STAMP): pyproject.toml constraints.txt requirements-deploy.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_PY) -m pip install --quiet --upgrade pip
	$(DEPLOY_PY) -m pip install --quiet torch==2.13.0
	$(DEPLOY_PY) -m pip install --quiet -c constraints.txt -e ".[dev]" -r requirements-deploy.txt
	touch $(DEPLOY_STAMP)

deploy-test: $(DEPLOY_STAMP)
	$(DEPLOY_PY) -m pytest -q tests_deploy

demo: $(STAMP)
	$(PY) scripts/demo.py --data $(DEMO_DATA)

test: $(STAMP) $(DEPLOY_STAMP)
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory deploy-test

lint: $(STAMP)
	$(PY) -m ruff check bundle scripts tests deploy tests_deploy
	$(PY) -m ruff format --check bundle scripts tests deploy tests_deploy

format: $(STAMP)
	$(PY) -m ruff format bundle scripts tests deploy tests_deploy
	$(PY) -m ruff check --fix bundle scripts tests deploy tests_deploy

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) runs eval outputs .pytest_cache
