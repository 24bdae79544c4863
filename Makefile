# PromSNMP Cloud Manager. `make run` serves the embedded default; `make test` runs everything.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

# The suite's own PostgreSQL database (pytest-django creates test_<name> and drops it) and Redis db.
TEST_DB_NAME ?= promsnmp_$(shell date +%s)_$(shell echo $$$$)
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/$(TEST_DB_NAME)
TEST_REDIS_URL ?= redis://127.0.0.1:6379/13

.PHONY: install run run-prod test lint format schema check-services clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py bootstrap
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

# The production shape on one machine (DESIGN.md): needs DATABASE_URL (PostgreSQL), REDIS_URL and the
# secrets. REST (gunicorn) on HOST:PORT, WebSocket (daphne) on HOST:WS_PORT (default PORT + 1), a Celery
# worker and beat; migrate, collectstatic and sync_schedules first. Ctrl-C or SIGTERM stops them all.
run-prod: install
	$(PY) manage.py run_prod

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The committed OpenAPI schema (docs/openapi.yaml); a test fails when it is stale.
schema: install
	VAR_DIR=$$(mktemp -d) $(PY) manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

check-services: install
	@$(PY) tests/check_services.py "$(TEST_DATABASE_URL)" "$(TEST_REDIS_URL)"

test: install lint check-services
	DATABASE_URL="$(TEST_DATABASE_URL)" TEST_REDIS_URL="$(TEST_REDIS_URL)" \
	SECRET_KEY=test-secret-key-not-for-production \
	FIELD_ENCRYPTION_KEYS="t1:$$(printf '%032d' 0 | base64 -w0)" \
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
