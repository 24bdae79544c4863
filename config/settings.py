"""Settings for the PromSNMP Cloud Manager, all read from the environment.

Two ways to run share this one file (see docs/decisions.md):
- embedded default: no DATABASE_URL / REDIS_URL → SQLite under var/, in-memory channel layer,
  eager Celery with beat embedded in the server process, secrets generated once under var/;
- production: PostgreSQL DATABASE_URL and REDIS_URL → Redis channel layer and broker, separate
  worker and beat processes, every secret must be given.
"""

from __future__ import annotations

import os
import secrets
from base64 import urlsafe_b64encode
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED = not REDIS_URL
PRODUCTION = DATABASE_URL.startswith(("postgres://", "postgresql://")) and not DEBUG


def _secret(name: str, generate) -> str:
    """A secret from the environment; in the embedded default generated once and kept under var/."""
    value = os.environ.get(name)
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(
            f"{name} is not set. Production (PostgreSQL DATABASE_URL, DEBUG off) needs every secret "
            f"given in the environment; see docs/configuration.md."
        )
    path = VAR_DIR / "secrets" / name.lower()
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    generated = generate()
    path.write_text(generated + "\n")
    path.chmod(0o600)
    return generated


SECRET_KEY = _secret("SECRET_KEY", lambda: secrets.token_urlsafe(50))
# Key ring for credentials at rest: "id:base64key,id:base64key"; the first encrypts, all decrypt.
FIELD_ENCRYPTION_KEYS = _secret(
    "FIELD_ENCRYPTION_KEYS",
    lambda: f"k1:{urlsafe_b64encode(secrets.token_bytes(32)).decode()}",
)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000)
WS_PORT = env_int("WS_PORT", PORT + 1)
PUBLIC_URL = os.environ.get("PUBLIC_URL", "")
PUBLIC_WS_URL = os.environ.get("PUBLIC_WS_URL", "")

# Timings (seconds). Instance liveness: healthy, degraded (missed one interval), offline (timeout).
HEARTBEAT_INTERVAL_SECONDS = env_int("HEARTBEAT_INTERVAL_SECONDS", 30)
HEARTBEAT_TIMEOUT_SECONDS = env_int("HEARTBEAT_TIMEOUT_SECONDS", 90)
LEADER_CHECK_INTERVAL_SECONDS = env_int("LEADER_CHECK_INTERVAL_SECONDS", 15)
# A leader whose event socket closed without a deregister is replaced after this long, unless it
# reconnected or heartbeated meanwhile (the heartbeat timeout stays the backstop for partitions).
FAILOVER_GRACE_SECONDS = env_int("FAILOVER_GRACE_SECONDS", 10)
if HEARTBEAT_TIMEOUT_SECONDS <= HEARTBEAT_INTERVAL_SECONDS:
    raise ImproperlyConfigured("HEARTBEAT_TIMEOUT_SECONDS must be larger than HEARTBEAT_INTERVAL_SECONDS")
if min(HEARTBEAT_INTERVAL_SECONDS, LEADER_CHECK_INTERVAL_SECONDS) < 1:
    raise ImproperlyConfigured("HEARTBEAT_INTERVAL_SECONDS and LEADER_CHECK_INTERVAL_SECONDS must be >= 1")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "core",
    "sites",
    "instances",
    "inventory",
    "discovery",
    "fleet",
    "config",  # the launchers' commands (serve, run_prod): the top layer, it may import every app
]

MIDDLEWARE = [
    "core.admission.AdmissionTicketMiddleware",  # first: holds the admission slot while the view runs
    "core.middleware.RequestIdMiddleware",
    "core.middleware.HttpMetricsMiddleware",
    "core.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
# Paths are the spec's, without a trailing slash; never redirect to add one.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

# SQLite, whichever way it is chosen (the default file or a sqlite:/// DATABASE_URL): two threads write
# (daphne's sync thread, the embedded beat thread), so WAL, IMMEDIATE transactions and a busy timeout
# keep "database is locked" away.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
# SQLite connections are kept: daphne's requests run in a fixed set of threads (core/asgi.py), so each
# keeps one (opening and closing one per request cost about 1.8 ms of CPU, a third of a heartbeat), and
# the beat thread and the WebSocket's one database thread keep theirs. A thread that ends takes its
# connection with it. (PostgreSQL under daphne uses the pool instead: see below.)
SQLITE_CONN_MAX_AGE = None

if DATABASE_URL:
    _db = dj_database_url.parse(DATABASE_URL)
    if _db["ENGINE"].endswith("postgresql"):
        # Daphne must not keep persistent connections (one per thread, never closed): use the pool.
        _db["CONN_MAX_AGE"] = 0
        if env_bool("DB_POOL", True):
            _db.setdefault("OPTIONS", {})["pool"] = {
                "min_size": env_int("DB_POOL_MIN_SIZE", 1),
                "max_size": env_int("DB_POOL_MAX_SIZE", 10),
                "timeout": env_int("DB_POOL_TIMEOUT_SECONDS", 10),
            }
        # Statements run through core.db.prepared_cursor() (the heartbeat's) are prepared on a pooled
        # connection at their fifth run there; Django's own cursors bind on the client and never are.
        _db.setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)
        # Django then checks each pooled connection on checkout (psycopg_pool's check_connection): one
        # whose backend died (failover, pg_terminate_backend, an idle timeout) is replaced, instead of
        # failing the request that drew it.
        _db["CONN_HEALTH_CHECKS"] = True
    elif _db["ENGINE"].endswith("sqlite3"):
        _db["OPTIONS"] = {**SQLITE_OPTIONS, **_db.get("OPTIONS", {})}
        _db["CONN_MAX_AGE"] = SQLITE_CONN_MAX_AGE
        # A test database beside it, in a file: Django's default (shared-cache memory) has table locks
        # that ignore the busy timeout.
        _db.setdefault("TEST", {})["NAME"] = str(
            Path(_db["NAME"]).with_name(f"test_{Path(_db['NAME']).name}")
        )
    DATABASES = {"default": _db}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "manager.sqlite3",
            "OPTIONS": SQLITE_OPTIONS,
            "CONN_MAX_AGE": SQLITE_CONN_MAX_AGE,
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]

# Discovery runs: a pending run (no leader) and a dispatched one time out after these; the sweep that
# times them out and dispatches pending runs runs this often.
DISCOVERY_PENDING_TIMEOUT_SECONDS = env_int("DISCOVERY_PENDING_TIMEOUT_SECONDS", 3600)
DISCOVERY_RUN_TIMEOUT_SECONDS = env_int("DISCOVERY_RUN_TIMEOUT_SECONDS", 7200)
DISCOVERY_SWEEP_INTERVAL_SECONDS = env_int("DISCOVERY_SWEEP_INTERVAL_SECONDS", 60)

# Inventory: change-log entries kept per site (older `since` → 410 Gone, the client fetches in full),
# the largest PUT inventory body, and the most addresses one discovery seed may cover.
INVENTORY_CHANGE_LOG_RETENTION = env_int("INVENTORY_CHANGE_LOG_RETENTION", 1000)
MAX_INVENTORY_BODY_BYTES = env_int("MAX_INVENTORY_BODY_BYTES", 64 * 1024 * 1024)
MAX_SEED_ADDRESSES = env_int("MAX_SEED_ADDRESSES", 65536)
# PUT inventory bodies larger than this are imported as jobs (202 + Location) even without
# `Prefer: respond-async`; 0 (the default) never: only clients that ask get a 202.
INVENTORY_IMPORT_ASYNC_BYTES = env_int("INVENTORY_IMPORT_ASYNC_BYTES", 0)
if INVENTORY_IMPORT_ASYNC_BYTES < 0:
    raise ImproperlyConfigured("INVENTORY_IMPORT_ASYNC_BYTES must be 0 (never) or more")
# POST …/inventory/devices with an Idempotency-Key: the answer is kept this long for repeats (24 h).
IDEMPOTENCY_KEY_TTL_SECONDS = env_int("IDEMPOTENCY_KEY_TTL_SECONDS", 86400)
for _name in (
    "INVENTORY_CHANGE_LOG_RETENTION",
    "MAX_INVENTORY_BODY_BYTES",
    "MAX_SEED_ADDRESSES",
    "IDEMPOTENCY_KEY_TTL_SECONDS",
    "FAILOVER_GRACE_SECONDS",
    "DISCOVERY_PENDING_TIMEOUT_SECONDS",
    "DISCOVERY_RUN_TIMEOUT_SECONDS",
    "DISCOVERY_SWEEP_INTERVAL_SECONDS",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1")

# Body size: 10 MB for ordinary requests (larger → 413 JSON, see core.middleware).
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 10 * 1024 * 1024)
LARGE_BODY_ROUTES = [
    ("PUT", r"/api/v1/sites/[^/]+/inventory/?", "MAX_INVENTORY_BODY_BYTES"),
    # The admin's upload of an inventory file (inventory/admin.py, SiteImportJobs).
    ("POST", r"/admin/sites/site/[^/]+/import-inventory/", "MAX_INVENTORY_BODY_BYTES"),
]
DATA_UPLOAD_MAX_MEMORY_SIZE = max(MAX_REQUEST_BODY_BYTES, MAX_INVENTORY_BODY_BYTES)

# Reverse proxies in front of us whose X-Forwarded-For / X-Forwarded-Proto we trust.
NUM_PROXIES = env_int("NUM_PROXIES", 0)

# Overload (docs/operations.md, "Capacity and overload"). Admission control of `manage.py serve`
# (core.admission): past this many HTTP requests in flight in the process, answer 503 + Retry-After at
# once instead of queueing (health probes and /metrics are never shed); 0 turns it off. Of those, at most
# MAX_REQUESTS_RUNNING run their views at once (each in a thread); the rest wait on the event loop, which
# then stays free to answer the 503s fast (fewer threads contend for the GIL).
MAX_REQUESTS_IN_FLIGHT = env_int("MAX_REQUESTS_IN_FLIGHT", 16)
MAX_REQUESTS_RUNNING = env_int("MAX_REQUESTS_RUNNING", 8)
if MAX_REQUESTS_IN_FLIGHT < 0 or MAX_REQUESTS_RUNNING < 1:
    raise ImproperlyConfigured(
        "MAX_REQUESTS_IN_FLIGHT must be 0 (off) or more, MAX_REQUESTS_RUNNING at least 1"
    )


# Rate limits per token and per site's registrations (core.throttling), in DRF's rate syntax, counted on
# the "throttle" cache: over them, 429 + Retry-After.
def env_rate(name: str, default: str) -> str:
    from core.throttling import parse_rate  # the throttles' own parser; it reads no settings

    value = os.environ.get(name) or default
    try:
        parse_rate(name, value)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    return value


RATE_LIMIT_PER_TOKEN = env_rate("RATE_LIMIT_PER_TOKEN", "1200/min")
RATE_LIMIT_REGISTER_PER_SITE = env_rate("RATE_LIMIT_REGISTER_PER_SITE", "120/min")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Shared by every process in production (one budget per token across gunicorn workers and replicas).
    "throttle": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("THROTTLE_CACHE_PREFIX", "promsnmp-throttle"),
            # A slow or absent Redis must not hold requests: the throttle then admits (fails open).
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle"}
    ),
}

REST_FRAMEWORK = {
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%SZ",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.BearerTokenAuthentication",
        "core.authentication.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.permissions.ScopePermission"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["core.throttling.TokenRateThrottle", "core.throttling.RegisterSiteThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "NUM_PROXIES": NUM_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "PromSNMP Cloud Manager API",
    "DESCRIPTION": "Fleet manager for PromSNMP instances: sites, instances, leader election.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "OAS_VERSION": "3.1.0",
    # Swagger UI from the installed sidecar package: the docs work without Internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "PREPROCESSING_HOOKS": ["core.schema.only_canonical_paths"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schema.camel_case_path_parameters",
        "core.schema.rate_limit_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "LivenessEnum": ["healthy", "degraded", "offline"],
        "ReportedStatusEnum": "instances.models.ReportedStatus",
    },
}

# Channels: Redis when REDIS_URL is set, otherwise one process with an in-memory layer.
CHANNEL_LAYER_BLOCKING_POP_SECONDS = 5  # channels_redis.core.RedisChannelLayer.brpop_timeout
CHANNEL_LAYER_SOCKET_TIMEOUT = 3 * CHANNEL_LAYER_BLOCKING_POP_SECONDS
# Messages waiting in Redis for one server process (channels-redis keeps ONE queue per process for all its
# sockets, and its default of 100 counts against that queue): a burst of events to more sites than that,
# faster than the process reads them (the relay's backlog after an outage, a change to many sites), was
# dropped with an INFO line (found by bench/scaling.py: 400 sites, 1,200 events, 65 % lost). A message is
# about 1 KB and expires after 60 s, so a dead process's queue holds at most this many KB for a minute.
CHANNEL_LAYER_CAPACITY = env_int("CHANNEL_LAYER_CAPACITY", 10_000)
if CHANNEL_LAYER_CAPACITY < 100:
    raise ImproperlyConfigured("CHANNEL_LAYER_CAPACITY must be 100 or more")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # channels-redis waits for messages with a blocking BZPOPMIN of 5 s; redis-py 8 gives
                # every read a 5 s socket timeout by default, and when that fires first the consumer
                # holding the receive crashes and its socket closes with 1011. The read timeout must
                # outlast the blocking pop (it still catches a dead connection).
                "hosts": [{"address": REDIS_URL, "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT}],
                "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "promsnmp"),
                "capacity": CHANNEL_LAYER_CAPACITY,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# Socket messages go through an outbox table (core/events.py). Every server process polls it this often
# for what it could not deliver at once (another process's, or a channel-layer outage's); 0 turns the
# poll off. A process whose in-memory layer holds no sockets leaves its messages to the server's poll,
# unless EVENT_RELAY_WITHOUT_SERVER (the test process, whose sockets are in-process).
EVENT_RELAY_INTERVAL_SECONDS = env_int("EVENT_RELAY_INTERVAL_MS", 500) / 1000
EVENT_RELAY_WITHOUT_SERVER = False
# Delivered events are kept this long, so a socket that reconnects with ?lastSeq= gets what it missed.
EVENT_REPLAY_SECONDS = env_int("EVENT_REPLAY_SECONDS", 900)
if EVENT_RELAY_INTERVAL_SECONDS < 0 or EVENT_REPLAY_SECONDS < 1:
    raise ImproperlyConfigured("EVENT_RELAY_INTERVAL_MS must be >= 0 and EVENT_REPLAY_SECONDS >= 1")

# Backups (fleet/backup.py): `manage.py backup_fleet` writes to BACKUP_URL (a directory, file:///path or
# s3://bucket/prefix) unless --to is given; BACKUP_CRON (five or six cron fields, UTC; empty: off) makes it
# a beat entry (sync_schedules); BACKUP_RETENTION archives are kept at the destination (0: all). S3 through
# django-storages: AWS_S3_ENDPOINT_URL for S3-compatible stores (MinIO, Ceph), credentials from boto3's
# usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a web identity, an instance role).
BACKUP_URL = os.environ.get("BACKUP_URL", "")
BACKUP_CRON = os.environ.get("BACKUP_CRON", "").strip()
BACKUP_RETENTION = env_int("BACKUP_RETENTION", 7)
if BACKUP_RETENTION < 0:
    raise ImproperlyConfigured("BACKUP_RETENTION must be 0 (keep every archive) or more")
if BACKUP_CRON and not BACKUP_URL:
    raise ImproperlyConfigured("BACKUP_CRON is set but BACKUP_URL is not: where should the backups go?")
AWS_S3_ENDPOINT_URL = os.environ.get("AWS_S3_ENDPOINT_URL", "")
AWS_S3_REGION_NAME = os.environ.get("AWS_S3_REGION_NAME") or os.environ.get("AWS_DEFAULT_REGION", "")

# Celery: Redis broker in production; eager in-process in the embedded default.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = EMBEDDED
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# The beat loop must wake at least as often as the fastest entry (leader check).
CELERY_BEAT_MAX_LOOP_INTERVAL = min(5, LEADER_CHECK_INTERVAL_SECONDS)
CELERY_TIMEZONE = "UTC"
# Celery logs through LOGGING like the servers (config/celery.py's setup_logging receiver): never its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
DJANGO_CELERY_BEAT_TZ_AWARE = True
# The queue that tasks go to and the worker takes them from: another queue name keeps workers of other
# deployments (or test runs) on the same Redis database from taking this one's tasks.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE") or "celery"
# Processes per `celery worker`; unset: one per CPU (Celery's default).
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 0) or None
# `manage.py run_prod` (make run-prod): gunicorn's workers, each with GUNICORN_THREADS threads (a slow
# client holds one thread, not a worker). A request's headers and body must arrive within
# GUNICORN_REQUEST_READ_TIMEOUT_SECONDS (longer for a large body; config/gunicorn.py).
GUNICORN_WORKERS = env_int("GUNICORN_WORKERS", 2)
GUNICORN_THREADS = env_int("GUNICORN_THREADS", 8)
GUNICORN_REQUEST_READ_TIMEOUT_SECONDS = env_int("GUNICORN_REQUEST_READ_TIMEOUT_SECONDS", 10)
# gunicorn's --timeout: the master restarts a worker silent for this long. Our threaded worker's main loop
# stays responsive while its threads work, so it bounds a stuck worker, not a long request (a large
# import is a job: Prefer: respond-async; docs/decisions.md).
GUNICORN_TIMEOUT = env_int("GUNICORN_TIMEOUT", 30)
for _name in (
    "GUNICORN_WORKERS",
    "GUNICORN_THREADS",
    "GUNICORN_REQUEST_READ_TIMEOUT_SECONDS",
    "GUNICORN_TIMEOUT",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1")
if (CELERY_WORKER_CONCURRENCY or 1) < 1:
    raise ImproperlyConfigured("CELERY_WORKER_CONCURRENCY must be at least 1")

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text").lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "core.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": "json" if LOG_FORMAT == "json" else "text",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "daphne": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "celery": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        # billiard (Celery's pool) logs a pool process's exit here, with propagation off; without a
        # handler Python's last resort would print it bare, not as JSON.
        "multiprocessing": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# Behind trusted proxies (NUM_PROXIES > 0), believe their X-Forwarded-Proto: wss:// URLs, secure cookies.
if NUM_PROXIES > 0:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
