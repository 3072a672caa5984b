# Forecourt: `make run` sets everything up and serves; `make test` sets up and runs the tests (`make test-fast`
# skips the slow ones).
# On a GPU box: `make run GPU=1` installs onnxruntime's CUDA build (the gpu extra) in place of the CPU one.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
GPU ?=
STAMP := $(VENV)/.installed$(if $(GPU),-gpu,)
comma := ,
CONFIG ?=
FC := $(BIN)/forecourt $(if $(CONFIG),--config $(CONFIG),)
PYTEST_ARGS ?=

.PHONY: run test test-fast setup weights browser redis init lint bench gpu-check clean-venv

run: setup weights init
	$(FC) serve

test: setup weights browser redis
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The quick loop: skips tests marked slow (real model weights, real gunicorn, the browser).
test-fast: setup weights
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	# torch and torchvision come from local disk where the machine has them (pip's find-links), else from PyPI.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1 -c constraints.txt
	$(BIN)/pip install --quiet -e ".[test$(if $(GPU),$(comma)gpu,)]" -c constraints.txt
	# onnxruntime's CUDA and CPU wheels install the same package: keep the one this box wants
	$(if $(GPU),PIP=$(BIN)/pip sh scripts/use_onnxruntime.sh gpu,! $(BIN)/pip show -q onnxruntime-gpu 2>/dev/null || PIP=$(BIN)/pip sh scripts/use_onnxruntime.sh cpu)
	rm -f $(VENV)/.installed $(VENV)/.installed-gpu
	touch $(STAMP)

weights: setup
	$(FC) models fetch

init: setup
	$(FC) init

browser:
	@command -v chromium >/dev/null 2>&1 || bash scripts/install_chromium.sh

redis:
	@command -v redis-server >/dev/null 2>&1 || bash scripts/install_redis.sh

lint: setup
	$(BIN)/ruff check core server models licensing scripts tests
	$(BIN)/mypy core licensing

bench: setup weights
	$(BIN)/pip install --quiet -e ".[bench]" -c constraints.txt
	$(BIN)/python scripts/bench_removebg.py

gpu-check: setup weights
	bash scripts/gpu_check.sh $(if $(GPU),,--cpu)

clean-venv:
	rm -rf $(VENV)
