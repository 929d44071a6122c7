# The two set-up commands (see README): `make run` and `make test`. Both work on a fresh machine and
# install exactly the dependency set locked in uv.lock. Re-locking is deliberate: `make upgrade`.
PYTHON ?= python3
UV_VERSION := 0.13.10
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
# uv builds .venv with this interpreter and never downloads one.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev lock-check upgrade dist lint typecheck pytest webtest clean

# uv itself, pinned, in a venv of its own (so `uv sync` never removes it from .venv).
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

## The locked runtime set (no test tools); --inexact so a `make test` venv keeps its tools.
install: $(UV)
	$(UV) sync --locked --inexact --no-dev --extra local --extra agno

## The locked runtime set plus the dev group, exactly; then the system packages the tests need.
install-dev: $(UV)
	$(UV) sync --locked --extra local --extra agno
	scripts/install-test-deps

## Fails when uv.lock no longer matches pyproject.toml.
lock-check: $(UV)
	$(UV) lock --check

## Deliberate upgrade: re-resolve every dependency to the newest allowed by pyproject, then review.
upgrade: $(UV)
	$(UV) lock --upgrade
	cd web && npm update --no-audit --no-fund

## The wheel and sdist, in dist/ (the built web UI and the migrations are inside).
dist: $(UV)
	$(UV) build --out-dir dist

## The main job: the server with the web UI on the embedded model and SQLite.
run: install
	$(VENV)/bin/tether serve --host $(HOST) --port $(PORT)

## The whole test suite: lock check, lint, types, Python tests (SQLite, PostgreSQL, Redis, browser), UI.
test: install-dev
	$(MAKE) --no-print-directory lock-check lint typecheck webtest pytest

lint:
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck:
	$(VENV)/bin/pyright

webtest:
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run typecheck && npm test

# Deliberate: two processes. Playwright's sync API keeps an event loop in the main thread,
# which would break every anyio test run after it in the same process.
pytest:
	cd tests/clients && npm ci --no-audit --no-fund --loglevel=error
	cd examples/js && npm ci --no-audit --no-fund --loglevel=error
	$(VENV)/bin/pytest -m "not browser"
	$(VENV)/bin/pytest -m browser

clean:
	rm -rf $(VENV) $(TOOLS) dist .pytest_cache .ruff_cache web/node_modules tests/clients/node_modules examples/js/node_modules
