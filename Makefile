# Every target bootstraps a local .venv from this project's own files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)    ## the main job: default experiment -> table + figure in results/demo/
	$(BIN)/gflow run demo --out results/demo

test: $(STAMP)    ## the whole test suite
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check gflow_jax tests benchmarks notebooks
	$(BIN)/ruff format --check gflow_jax tests benchmarks notebooks

bench: $(STAMP)
	$(BIN)/pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu || true  # CPU build
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) results .pytest_cache
