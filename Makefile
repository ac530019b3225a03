# The commands a newcomer and CI run:
#
#     make install    # .venv with the daemon, the client and the dev tools; buf from npm
#     make test       # lint, then every test
#
# Everything runs through .venv's Python, so nothing needs activating.
# Use another interpreter with e.g. `make test PY=/path/to/venv/bin/python`.

PYTHON ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
BUF ?= npx --no buf
PYTEST_ARGS ?=

PY_SOURCES = server clients/python tools harness tests bench

.PHONY: install generate lint test test-python test-node

install:
	# The console's browser tests drive Debian's chromium through Playwright (never `playwright install`).
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ./clients/python -e '.[dev]'
	npm ci --no-audit --no-fund
	npm --prefix clients/node ci --no-audit --no-fund

generate:
	$(PY) tools/generate_protos.py

lint:
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(PY) tools/generate_protos.py --check
	$(PY) -m ruff check $(PY_SOURCES)
	$(PY) -m ruff format --check $(PY_SOURCES)
	$(PY) -m mypy server clients/python/src/aivcs/ledger harness bench

test: lint test-python test-node

test-python:
	$(PY) -m pytest $(PYTEST_ARGS)

# The TypeScript client's tests start the Python daemon with this interpreter.
test-node:
	cd clients/node && PYTHON=$(abspath $(PY)) npm test
