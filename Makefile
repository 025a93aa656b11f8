# Two commands matter: `make demo` and `make test`. Both set everything up from PyPI first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch, installed before anything else so no CUDA packages are pulled in.
TORCH ?= torch==2.13.0

.PHONY: setup prometheus demo test lint typecheck unit e2e bench chaos clean

$(BIN)/.rea-installed: pyproject.toml examples/autoint/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet -e examples/autoint
	touch $@

setup: $(BIN)/.rea-installed

# The observability tests check the dashboards and alert rules on a real Prometheus (and promtool),
# from Debian's package; without root or apt, the tests that need it say why they skip.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || \
		echo "prometheus could not be installed: the Prometheus tests will skip"

demo: setup
	$(BIN)/rea demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m "not e2e"

e2e: setup prometheus
	$(BIN)/pytest -m e2e

# Two pytest workers: the end-to-end tests one after another on one (their services leave a core
# idle much of the time), the other files beside them (tests/conftest.py schedules them); about
# 32 min on 2 cores against 43 on one process (TEST_WORKERS=0; README, "Two commands").
TEST_WORKERS ?= 2

test: lint typecheck prometheus
	$(BIN)/pytest -n $(TEST_WORKERS)

bench: setup
	$(BIN)/python -m rea_bench.wake_latency
	$(BIN)/python -m rea_bench.capacity
	$(BIN)/python -m rea_bench.logger_ingest

chaos: setup
	$(BIN)/rea chaos

clean:
	rm -rf $(VENV) .rea .mypy_cache .ruff_cache .pytest_cache
