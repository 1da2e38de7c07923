# RAG Studio. `make run` sets everything up and serves on 127.0.0.1:8000 (the app's own
# dependencies only: `make install`); `make test` runs the whole suite and `make test-fast`
# the unit and single-process tests, with the test tools added (`make install-dev`).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-dev run test test-fast test-scaleout lint typecheck bench bench-quality bench-search bench-memory bench-remote clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	touch $(STAMP)

# The test and lint tools on top (pytest, playwright, schemathesis, moto, ruff, mypy).
install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(PY) -m pip install --quiet -r requirements-dev.lock
	touch $(DEV_STAMP)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py serve 127.0.0.1:8000

# Test processes (pytest-xdist): each loads the model and runs its own worker clusters.
TEST_PROCESSES ?= 2

test: install-dev
	$(PY) -m pytest -n $(TEST_PROCESSES)

# Unit and single-process tests, less the slow ones: what a change is checked with before the
# whole suite (which runs them all).
test-fast: install-dev
	$(PY) -m pytest -n $(TEST_PROCESSES) -m "not integration and not subprocess and not slow" -q

# The suite again on PostgreSQL, Redis and an S3 API (docs/deploy.md); skipped when the
# servers are unreachable, except under CI=true.
test-scaleout: install-dev
	$(PY) -m ragstudio.testing.scaleout -n $(TEST_PROCESSES) -m integration

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy ingestion knowledge_bases search ragstudio

bench: install
	$(PY) bench/ingest.py --embedder local-fast

bench-quality: install
	$(PY) bench/quality.py

bench-search: install
	$(PY) bench/search.py

bench-memory: install
	$(PY) bench/memory.py

bench-remote: install
	$(PY) bench/remote.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
