# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
EXAMPLE ?= examples/hello
STATE ?= ./state

.PHONY: run test test-slow test-reliability lint typecheck test-fast clean readme-options git-deps

$(BIN)/marimo-orchestrator: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/marimo-orchestrator
	@echo "Open http://localhost:$(PORT)/ once it prints that it is serving."
	$(BIN)/marimo-orchestrator $(EXAMPLE) --port $(PORT) --state-dir $(STATE)

lint: $(BIN)/marimo-orchestrator
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

typecheck: $(BIN)/marimo-orchestrator
	$(BIN)/mypy

# The suite in TEST_WORKERS processes (pytest-xdist): most of a test is waiting on marimo, a
# venv or Chromium, so on this 2-core machine 3 workers keep both cores busy (bench/RESULTS.md,
# "The test suite"). TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 3

test: lint typecheck browser-deps volume-deps git-deps
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist worksteal

# The reliability suite: long loops and fault injection (SIGKILL at random moments, a flaky
# index, late volumes, marimo killed under use, 200 clients, SIGTERM under load).
# Kept out of `make test`; CI runs it.
test-reliability: $(BIN)/marimo-orchestrator
	$(BIN)/python -m pytest -q -m slow -s -p no:cacheprovider

test-slow: test-reliability

# The inner loop: every test that starts neither marimo nor Chromium (README, "Tests").
test-fast: $(BIN)/marimo-orchestrator git-deps
	$(BIN)/python -m pytest -q -x -m "not marimo and not browser and not slow"

# uv and pip fetch `git+` requirements with the git command: the tests of a failing git line
# (tests/test_faults.py, tests/test_requirements_job.py) need Debian's git.
git-deps:
	@command -v git >/dev/null || { \
	  echo "git-deps: no git, installing it with apt-get"; \
	  $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends git; \
	}
	@command -v git >/dev/null || { echo "git-deps: git is still missing" >&2; exit 1; }

# README's options table and the entry point's switches are made from orchestrator/options.py
# (tests/test_options.py checks both).
readme-options: $(BIN)/marimo-orchestrator
	$(BIN)/python -m orchestrator.option_documents README.md docker/entrypoint.sh

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache

# Build and run the Dockerfile for real with podman (see tests/container/).
include container.mk

# Browser tests with Debian's Chromium (see tests/browser/).
include browser.mk

# The simulated network volume, FUSE (see tests/support/slow_volume.py).
include volume.mk
