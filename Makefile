# Entry points for a fresh machine: `make demo`, `make test` (the locked versions) and
# `make test-latest` (the newest releases pyproject.toml allows).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LATEST_VENV ?= .venv-latest
LATEST_BIN := $(LATEST_VENV)/bin
# torch first, pinned to the CPU wheel on disk, so nothing pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Exact versions of every dependency the suite was last run with (pip-tools; `make lock` rewrites it).
LOCK := requirements/test.lock
TORCH_PIN := requirements/torch.txt
PYTEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: venv install install-test demo test test-fast test-latest lock lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python

install: venv
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c $(LOCK) -e .

install-test: venv
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c $(LOCK) -e ".[test]"

demo: install
	$(BIN)/roma demo

test: install-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(PYTEST_ENV) $(BIN)/python -m pytest -q --timeout=900; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-fast: install-test
	$(PYTEST_ENV) $(BIN)/python -m pytest -q -m "not slow"

# The newest releases pyproject.toml allows (torch stays on the machine's CPU wheel), in a venv of
# their own, on the fast subset (`-m "not slow"`) so that CI runs both checks within its budget.
# On failure it prints one line naming every version that differs from the lock.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PY) -m venv $(LATEST_VENV)
	$(LATEST_BIN)/python -m pip install -q --upgrade pip
	$(LATEST_BIN)/pip install -q "$(TORCH_SPEC)"
	$(LATEST_BIN)/pip install -q --upgrade --upgrade-strategy eager -c $(TORCH_PIN) -e ".[test]"
	$(LATEST_BIN)/python scripts/lock_diff.py $(LOCK) || true
	$(PYTEST_ENV) $(LATEST_BIN)/python -m pytest -q -m "not slow" --timeout=900 -p no:cacheprovider; rc=$$?; \
	if [ $$rc -ne 0 ]; then echo "test-latest FAILED with the newest releases; $$($(LATEST_BIN)/python scripts/lock_diff.py $(LOCK))"; fi; \
	exit $$rc

# Re-resolve the lock from pyproject.toml (run after changing dependencies, then `make test`).
lock: venv
	$(BIN)/pip install -q pip-tools
	$(BIN)/pip-compile --quiet --extra test --strip-extras --allow-unsafe --no-emit-find-links \
		--no-emit-index-url -c $(TORCH_PIN) -o $(LOCK) pyproject.toml

lint: install-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(LATEST_VENV) build dist src/*.egg-info .pytest_cache runs
