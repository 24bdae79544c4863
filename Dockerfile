# syntax=docker/dockerfile:1
# PromSNMP Cloud Manager: one image for every process of the production shape (docs/operations.md):
#   gunicorn config.wsgi (REST, the default CMD), `manage.py serve --no-beat` (daphne, WebSocket),
#   `celery -A config worker`, `celery -A config beat` (exactly one) and the migrate job.
# The Helm chart (helm/promsnmp-manager) sets the command of each. No secret is baked in: SECRET_KEY,
# FIELD_ENCRYPTION_KEYS, DATABASE_URL and REDIS_URL come from the environment at run time.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtualenv with the dependencies and the project ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY . .
# The project is installed in place (editable): settings find templates/, static/ and manage.py next to
# config/ (BASE_DIR), which a copy in site-packages would not have.
RUN pip install --no-deps -e . \
    && python -m compileall -q config core sites instances inventory discovery fleet manage.py

# ---- runtime ----
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="promsnmp-manager" \
      org.opencontainers.image.description="PromSNMP Cloud Manager: fleet manager for PromSNMP SNMP collectors" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed uid/gid, so that runAsUser, fsGroup and file ownership agree everywhere.
ARG APP_UID=10001
RUN groupadd --system --gid ${APP_UID} promsnmp \
    && useradd --system --uid ${APP_UID} --gid ${APP_UID} --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin promsnmp

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VAR_DIR=/var/lib/promsnmp-manager \
    HOST=0.0.0.0 \
    PORT=8000 \
    XDG_RUNTIME_DIR=/tmp

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app

# The admin's static files, collected into $VAR_DIR/staticfiles at build time (whitenoise serves them).
# collectstatic needs neither the database nor the real secrets; the two values below exist only for
# this one command (not ENV: nothing is kept), so settings do not generate secrets into $VAR_DIR. The
# checks make sure nothing but the static files was written. $VAR_DIR belongs to the app user (the
# embedded default writes its SQLite database and secrets there); the static files stay root's.
RUN SECRET_KEY=build-time-collectstatic-only \
    FIELD_ENCRYPTION_KEYS=build:MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA= \
    python manage.py collectstatic --noinput -v0 \
    && test ! -e "$VAR_DIR/secrets" && test ! -e "$VAR_DIR/manager.sqlite3" \
    && chown ${APP_UID}:${APP_UID} "$VAR_DIR"

USER ${APP_UID}:${APP_UID}
# 8000: gunicorn (REST, admin, /health/*, /metrics); 8001: daphne (the WebSocket /api/v1/ws).
EXPOSE 8000 8001
# REST under gunicorn, as `make run-prod` starts it: threaded workers that read each request within a
# deadline (a slow client holds one thread, not a worker); forwarded headers are Django's business
# (NUM_PROXIES), so gunicorn trusts none; config.gunicorn_conf sums the workers' metrics (prometheus_client
# multiprocess mode in a directory of its own under /tmp). The chart passes its own arguments.
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--config", "python:config.gunicorn_conf", "--worker-class", "config.gunicorn.ThreadWorker", "--threads", "8", "--forwarded-allow-ips", "", "--graceful-timeout", "10", "--timeout", "30", "--worker-tmp-dir", "/dev/shm"]
