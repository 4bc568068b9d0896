# The README's two commands. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test mutate gallery

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

run: install
	$(BIN)/tallyd demo

test: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/pytest -n 2 --dist worksteal

# Mutation testing of the engine, the write path and auth ([tool.mutmut] in pyproject.toml), one
# worker: slow (see the README's Development section), so not part of `make test`. Results are
# kept in mutants/, so a second run only tests what changed; ONLY='api.auth.*' reruns a module.
# A mutant that leaves a request waiting fails its test after 120 s (pytest-timeout; the fast
# selection's slowest test takes ~35 s), not after the suite's 420 s: the write path's loops.
mutate: install-test
	PYTEST_ADDOPTS=--timeout=120 $(BIN)/mutmut run --max-children 1 $(if $(ONLY),'$(ONLY)')
	$(BIN)/python -m tests.mutation

# The README's pictures of the embeds and the dashboard: the browser tests' own screenshots.
gallery: install-test
	$(BIN)/pytest -q tests/browser/test_embeds.py tests/browser/test_dashboard.py \
		-k "iframes or components or every_table"
	for name in chart tile top table products; do \
		cp test-artifacts/embed-$$name.png docs/gallery/$$name.png; done
	cp test-artifacts/components-dark.png docs/gallery/components-dark.png
	cp test-artifacts/dashboard-top.png docs/dashboard.png
