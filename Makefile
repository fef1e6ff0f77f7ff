# make run: set up .venv and run the whole pipeline (dvc repro) on the embedded default.
# make test: the test suite (what CI runs).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test flow bench ui server recover clean-outputs

$(BIN)/dvc: pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (Python 3.11 is required)"; exit 1; }
	$(PY) -m venv $(VENV)
	# -qq: errors only; pip's per-package WARNING lines (e.g. about an index in pip.conf) were 300 of make run's lines
	$(BIN)/pip install -qq --upgrade pip
	# torch first and pinned: with 2.13.0 present, nothing pulls a CUDA build
	$(BIN)/pip install -qq torch==2.13.0
	$(BIN)/pip install -qq -e '.[test]'
	touch $(BIN)/dvc

setup: $(BIN)/dvc

run: setup
	dvc repro
	@$(BIN)/python -m flows.recover --save   # this run is now the last good one (make recover)
	@echo; dvc metrics show   # the headline (reports/scores.json); everything is in reports/metrics.json

test: setup
	$(BIN)/python -m pytest

flow: setup
	$(BIN)/python -m flows.pipeline

# after a failed run: put back the last good run's dvc.lock, reports, data/ and models/
recover: setup
	$(BIN)/python -m flows.recover

# every speed benchmark side by side (~1 h on 2 cores): bench/results/ and BENCHMARKS.md
bench: setup
	$(BIN)/python -m bench.run

ui: setup
	mlflow ui --host 127.0.0.1 --backend-store-uri sqlite:///mlflow.db

# a Prefect server for scheduled runs (flows.pipeline --serve), with the defaults below (no telemetry)
server: setup
	prefect server start --host 127.0.0.1

# Offline defaults for everything make starts (each entry point also sets them; the shell can override).
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1
