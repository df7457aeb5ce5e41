# The two commands a newcomer needs (see README.md):
#   make serve   set up .venv and run the MTA (smtpx serve, embedded default config);
#                ARGS passes options to it: make serve ARGS="--listen 127.0.0.1:2600"
#   make test    set up .venv with the dev tools and run ruff, mypy --strict and pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[uvloop]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,uvloop]'
	touch $@ $(VENV)/.runtime

serve: $(VENV)/.runtime
	$(BIN)/smtpx serve $(ARGS)

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

pytest: $(VENV)/.dev
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(BIN)/python bench/protocol.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
