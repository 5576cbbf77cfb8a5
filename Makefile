# `make test` and `make demo` set themselves up from nothing: a .venv with pinned dependencies.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench clean

setup: $(STAMP)

# torch first and pinned, so no resolver step can pull a CUDA build on a CPU machine.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/flowpwm train

bench: setup
	$(BIN)/python benchmarks/bench_world_model.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
