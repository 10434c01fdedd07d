# Two commands on a fresh clone: `make run` (the bot) and `make test` (the tests).
# Both build .venv on first use with the Python 3.11+ found on PATH. uv installs the
# dependencies (about 10 s against pip's 25 s on a fresh clone; pip if uv cannot be had),
# compiling their bytecode: the tests start ~100 bots, each of which would otherwise
# compile what it imports where PYTHONDONTWRITEBYTECODE is set.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run check test lint bytecode pytest bench clean i18n

$(BIN)/activate: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11+ or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv && \
	    $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]' || \
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

# Bytecode for bot/ and tests/, made once before the tests. Where PYTHONDONTWRITEBYTECODE
# is set (CI images often set it) Python caches none: each of the ~100 bots the tests
# start as subprocesses would compile bot/ again (0.2 s of CPU each), and each xdist
# worker would rewrite the asserts of every test module again (pytest, ~4.5 s of CPU
# each). A collection with the variable unset leaves pytest's rewritten modules cached.
bytecode: $(BIN)/activate
	$(BIN)/python -m compileall -q -j 0 bot tests
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q --collect-only -p no:cacheprovider >/dev/null

# 6 workers even on 2 cores: the tests mostly wait (fakes, subprocesses, leases). On a
# fresh clone of a quiet 2-core machine pytest took 141 s on 4 workers and 128 s on 6,
# green in both runs.
# One test at a time to each worker (--maxschedchunk=1), the long ones early (see
# pytest_collection_modifyitems in tests/conftest.py): no worker is left with a queue of
# long tests while the others have finished. lint runs beside the tests (its ~10 s of
# CPU fill the cores the waiting tests leave idle: 156 s → 141 s in all); make exits
# non-zero when either fails. bytecode comes first: the workers import what it compiled.
test: $(BIN)/activate
	@$(MAKE) --no-print-directory -j2 lint pytest

pytest: bytecode
	$(BIN)/pytest -q -n 6 --maxschedchunk=1

# After changing texts: extract every _()/_n() message of bot/ into the template and merge
# it into each language's catalogue (new messages come empty, changed ones fuzzy: make
# test fails until they are translated). See README, "Languages".
LOCALE := bot/i18n/locale
i18n: $(BIN)/activate
	$(BIN)/pybabel extract -F babel.cfg --no-default-keywords -k _:2 -k _n:2,3 \
		--no-location --omit-header --width 99 -o $(LOCALE)/bot.pot bot
	$(BIN)/pybabel update -i $(LOCALE)/bot.pot -d $(LOCALE) -D bot --width 99 --ignore-obsolete

bench: $(BIN)/activate
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Build deploy/Dockerfile with buildah (no Docker engine needed) and run `python -m bot
# check` in the image: needs root, buildah and debootstrap; see deploy/build-image.sh.
# Not part of `make test`: it downloads a Debian base and the dependencies.
.PHONY: image
image:
	deploy/build-image.sh
