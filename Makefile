# Two commands do everything on a fresh machine:
#   make demo   set up, then run the main job (`ftlcloud demo`) on its embedded default
#   make test   set up, then lint, type-check and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup system-deps demo test test-fast lint bench clean

setup: $(VENV)/.installed

system-deps:
	bash scripts/install-system-deps.sh

$(VENV)/.installed: pyproject.toml
	bash scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/ftlcloud demo $(ARGS)

lint: setup
	$(BIN)/ruff check ftlcloud tests benchmarks
	$(BIN)/ruff format --check ftlcloud tests benchmarks
	$(BIN)/mypy

# The whole suite, slow and integration tests included (they start real SeaweedFS, Dask and
# Dask-Gateway servers and a headless Chromium).
test: lint
	$(BIN)/pytest -m "slow or not slow" $(ARGS)

# The quick loop while developing: no slow tests.
test-fast: setup
	$(BIN)/pytest $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache ftlcloud-store
