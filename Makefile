# The platform's commands. `make up` starts everything locally; `make test` runs lint and tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
TRITON_VENV := .venv-triton
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRITON_STAMP := $(TRITON_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install browser up down status logs test test-fast lint format demo bench soak clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(TRITON_STAMP): pyproject.toml
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q --upgrade pip==25.3
	$(TRITON_VENV)/bin/python -m pip install -q "nvidia-pytriton==0.7.0" "numpy==1.26.4" "pandas==2.2.3" "torch==2.13.0" "xgboost-cpu==3.2.0" "pydantic==2.14.3" "pydantic-settings==2.16.3"
	$(TRITON_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

install: $(STAMP) $(TRITON_STAMP) browser ## create .venv and .venv-triton (numpy<2), the browser, and install

# The browser tests drive Debian's Chromium through Playwright (never `playwright install`).
BROWSERS := chromium chromium-browser google-chrome google-chrome-stable
browser: ## install Debian's chromium for the browser tests unless a Chromium is on PATH
	@for b in $(BROWSERS); do command -v $$b >/dev/null && exit 0; done; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else \
	  echo "no Chromium on PATH and no root: run 'sudo apt-get install chromium' (browser tests skip until then)"; exit 0; fi; \
	echo "== installing chromium from Debian"; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium

up: install ## start every service locally and print the table
	$(PY) -m secml.stack up

down: ## stop exactly the processes `make up` started
	@test -x $(PY) && $(PY) -m secml.stack down || echo "nothing to stop (no $(VENV))"

status: ## print the service table
	$(PY) -m secml.stack status

logs: ## tail every service log
	$(PY) -m secml.stack logs

lint: $(STAMP) ## ruff, and the import rules between layers (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install lint ## lint, then every test (real servers started by fixtures)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the quick loop: tests that need no server
	$(PY) -m pytest -m "not integration and not browser" -x -q $(PYTEST_ARGS)

demo: up ## generate data, train, and send traffic through the gateway
	$(PY) -m demo

bench: install ## run the benchmarks in bench/
	@for b in bench/bench_*.py; do m=$$(basename $$b .py); echo "== bench.$$m"; $(PY) -m bench.$$m || exit 1; done

SOAK_SECONDS ?= 600
soak: install ## the gateway at half its measured max rate for SOAK_SECONDS (600): p99, RSS growth
	$(PY) -m bench.bench_soak --seconds $(SOAK_SECONDS)

clean: down
	rm -rf .run
