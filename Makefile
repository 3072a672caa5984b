# Forecourt: `make run` sets everything up and serves; `make test` sets up and runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?=
FC := $(BIN)/forecourt $(if $(CONFIG),--config $(CONFIG),)
PYTEST_ARGS ?=

.PHONY: run test setup weights browser init lint bench clean-venv

run: setup weights init
	$(FC) serve

test: setup weights browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	# torch and torchvision come from local disk where the machine has them (pip's find-links), else from PyPI.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1 -c constraints.txt
	$(BIN)/pip install --quiet -e ".[test]" -c constraints.txt
	touch $(STAMP)

weights: setup
	$(FC) models fetch

init: setup
	$(FC) init

browser:
	@command -v chromium >/dev/null 2>&1 || bash scripts/install_chromium.sh

lint: setup
	$(BIN)/ruff check server models licensing scripts tests
	$(BIN)/mypy licensing

bench: setup weights
	$(BIN)/pip install --quiet -e ".[bench]" -c constraints.txt
	$(BIN)/python scripts/bench_removebg.py

clean-venv:
	rm -rf $(VENV)
