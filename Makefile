# kpkeys-sim: `make run` runs the main job, `make test` runs lint, types and tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_RUN  := $(VENV)/.installed-run
STAMP_DEV  := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/kpkeys-sim run $(ARGS)

LINT_DIRS := $(wildcard src tests bench)

lint: $(STAMP_DEV)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

typecheck: $(STAMP_DEV)
	$(BIN)/mypy src

pytest: $(STAMP_DEV)
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	 if [ $$rc -eq 5 ]; then echo 'pytest: no tests collected (exit 5)'; exit 0; fi; exit $$rc

# The report test renders report.html in Debian's headless Chromium; install it when missing.
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

test: chromium lint typecheck pytest

bench: $(STAMP_DEV)
	$(BIN)/python bench/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
