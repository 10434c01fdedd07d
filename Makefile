# Two commands on a fresh clone: `make run` (the bot) and `make test` (the tests).
# Both build .venv on first use with the Python 3.11+ found on PATH.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run check test lint bench clean

$(BIN)/activate: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11+ or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(BIN)/activate

run: $(BIN)/activate
	$(BIN)/python -m bot

check: $(BIN)/activate
	$(BIN)/python -m bot check

lint: $(BIN)/activate
	$(BIN)/ruff format --check bot tests bench
	$(BIN)/ruff check bot tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

bench: $(BIN)/activate
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
