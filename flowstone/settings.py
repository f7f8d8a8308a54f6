"""Django settings for a FlowStone deployment.

Every value can be overridden from the environment; with no environment at all this is the
embedded default: SQLite under ``var/``, local-filesystem IO, in-process execution.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

import flowstone

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("FLOWSTONE_DATA_DIR", BASE_DIR / "var")).resolve()

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "flowstone-insecure-development-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = [
    h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h
]


def _env_flag(name: str) -> bool:
    """A ``0``/``1`` variable; anything else is a configuration error naming it."""
    value = os.environ.get(name, "0")
    if value not in ("0", "1"):
        raise ImproperlyConfigured(f"{name} must be 0 or 1, not {value!r}")
    return value == "1"


def _env_seconds(name: str) -> int:
    """A non-negative whole number of seconds; anything else is a configuration error."""
    value = os.environ.get(name, "0")
    if not value.isdigit():
        raise ImproperlyConfigured(f"{name} must be a whole number of seconds, not {value!r}")
    return int(value)


def _env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """``Header-Name: value`` as Django's ``SECURE_PROXY_SSL_HEADER`` (``HTTP_HEADER_NAME``)."""
    value = os.environ.get(name, "")
    if not value:
        return None
    header, sep, expected = (part.strip() for part in value.partition(":"))
    if not sep or not header or not expected:
        raise ImproperlyConfigured(
            f"{name} must look like 'X-Forwarded-Proto: https', not {value!r}"
        )
    return "HTTP_" + header.upper().replace("-", "_"), expected


# Production security (README "Deploying"): off by default so the embedded default and runserver
# work over plain HTTP; with the documented variables set, `manage.py check --deploy` is clean.
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o
]
SECURE_SSL_REDIRECT = _env_flag("DJANGO_SECURE_SSL_REDIRECT")
# Load balancers and Prometheus probe over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^metrics$"]
SECURE_PROXY_SSL_HEADER = _env_proxy_ssl_header("DJANGO_SECURE_PROXY_SSL_HEADER")
SESSION_COOKIE_SECURE = _env_flag("DJANGO_SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = _env_flag("DJANGO_CSRF_COOKIE_SECURE")
SECURE_HSTS_SECONDS = _env_seconds("DJANGO_SECURE_HSTS_SECONDS")
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_flag("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = _env_flag("DJANGO_SECURE_HSTS_PRELOAD")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "assets",
    "lineage",
    "approvals",
    "django_celery_beat",
    "schedules",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, Swagger UI) under any server, runserver with DEBUG off included.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "flowstone.urls"
WSGI_APPLICATION = "flowstone.wsgi.application"
ASGI_APPLICATION = "flowstone.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'flowstone.sqlite3'}"),
        # Persistent connections, checked before each reuse: a worker keeps one connection per
        # pool process across tasks instead of connecting for every step (see CELERY_DB_REUSE_MAX).
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "600")),
        conn_health_checks=True,
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite cannot create the directory of its database file; the embedded default needs it.
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Concurrent readers and a waiting writer instead of "database is locked" errors.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }

elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Bounded waits: no statement waits for a lock forever, no session keeps a transaction open
    # while its process is frozen, and a peer that vanished is noticed by TCP keepalives.
    # Milliseconds; 0 turns a limit off. statement_timeout is off by default because assets may
    # run long queries on this connection.
    _server_settings = {
        "lock_timeout": os.environ.get("FLOWSTONE_DB_LOCK_TIMEOUT_MS", "10000"),
        "idle_in_transaction_session_timeout": os.environ.get(
            "FLOWSTONE_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "30000"
        ),
        "statement_timeout": os.environ.get("FLOWSTONE_DB_STATEMENT_TIMEOUT_MS", "0"),
    }
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "options": " ".join(f"-c {name}={value}" for name, value in _server_settings.items()),
            "keepalives": 1,
            "keepalives_idle": int(os.environ.get("FLOWSTONE_DB_KEEPALIVES_IDLE", "30")),
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# WhiteNoise serves STATIC_ROOT once `collectstatic` has filled it (with caching headers), and
# until then the apps' own static directories, so the admin and Swagger UI are styled with the
# documented commands alone.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
with contextlib.suppress(OSError):  # WhiteNoise warns about a missing STATIC_ROOT
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# The API: session (the admin's login) or token authentication; authenticated users only.
REST_FRAMEWORK = {
    # Token first: a request without credentials is a 401 with ``WWW-Authenticate: Token``.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # drf-spectacular's, plus each operation's error responses (401/403/404/400).
    "DEFAULT_SCHEMA_CLASS": "flowstone.openapi.AutoSchema",
    # Every list is paginated (ADR 0024): by page number here, by cursor for the big tables.
    "DEFAULT_PAGINATION_CLASS": "flowstone.pagination.PageNumberPagination",
    # DRF's defaults, with a JSON parser that refuses bodies nested too deep (a 400, not a 500).
    "DEFAULT_PARSER_CLASSES": [
        "flowstone.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # One table maps every FlowStoneError to its status code; views do not catch them.
    "EXCEPTION_HANDLER": "flowstone.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "FlowStone API",
    "VERSION": flowstone.__version__,
    "DESCRIPTION": "Assets, runs, materializations, lineage and approvals.",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The schema documents the API, not the endpoint that serves it.
    "SERVE_INCLUDE_SCHEMA": False,
    # Stable enum component names, whatever other field shares a name or a choice set.
    "ENUM_NAME_OVERRIDES": {
        "RunKindEnum": "flowstone.openapi.RUN_KINDS",
        "StartRunKindEnum": "assets.serializers.RUN_KINDS",
        "AttemptOutcomeEnum": "assets.models.StepAttempt.Outcome",
        "RunStatusEnum": "flowstone.openapi.RUN_STATUSES",
        "StepStatusEnum": "flowstone.openapi.STEP_STATUSES",
        "ApprovalStatusEnum": "approvals.models.Approval.Status",
        "DecisionEnum": "approvals.api.DECISIONS",
        "OptionOutcomeEnum": "flowstone.checkpoints.OUTCOMES",
        "BulkDecisionEnum": "approvals.services.BULK_DECISIONS",
        "TickKindEnum": "schedules.models.Tick.Kind",
        "TickStatusEnum": "schedules.models.Tick.Status",
        "ErrorKindEnum": "flowstone.errors.ERROR_KINDS",
    },
}

LOG_FORMAT = os.environ.get("FLOWSTONE_LOG_FORMAT", "plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"step_fields": {"()": "flowstone.logging.StepFieldsFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s "
            "run_id=%(run_id)s asset=%(asset)s partition=%(partition)s",
        },
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s "
            "%(run_id)s %(asset)s %(partition)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["step_fields"],
        },
    },
    "loggers": {
        app: {
            "handlers": ["console"],
            "level": os.environ.get("FLOWSTONE_LOG_LEVEL", "WARNING"),
        }
        for app in ("flowstone", "assets", "approvals", "lineage", "schedules")
    },
}

# Celery: JSON only, late ack + reject on worker lost, one message at a time per worker process.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "7200")),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
# Celery's Django fixup closes every connection before and after each task unless this is set;
# with it, the fixup recycles them every this many tasks, and ``flowstone.celery`` closes broken or
# older-than-CONN_MAX_AGE ones at each task boundary (Django's ``close_old_connections``).
CELERY_DB_REUSE_MAX = int(os.environ.get("CELERY_DB_REUSE_MAX", "1000"))
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Records and drops any message the worker cannot read instead of dying on it (ADR 0021).
CELERY_WORKER_CONSUMER = "flowstone.poison:PoisonProofConsumer"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "flowstone"
# Housekeeping (the stale-step sweeper, the outbox relay, approval timeouts) goes to its own queue,
# served by its own small worker (`--queues=flowstone.control`), so it never waits behind steps
# and never takes a step's pool process while it waits for a lock.
CELERY_TASK_ROUTES = {
    task: {"queue": "flowstone.control"}
    for task in (
        "flowstone.recover_stale_steps",
        "flowstone.relay_outbox",
        "flowstone.expire_approvals",
    )
}
CELERY_TASK_TIME_LIMIT = int(os.environ.get("CELERY_TASK_TIME_LIMIT", "3600"))
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Beat reads its schedule from the database (django-celery-beat); the entries below are copied
# there, and so are the @schedule and sensor definitions (manage.py sync_schedules).
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "flowstone-recover-stale-steps": {
        "task": "flowstone.recover_stale_steps",
        "schedule": float(os.environ.get("FLOWSTONE_SWEEP_SECONDS", "5")),
    },
    "flowstone-relay-outbox": {
        "task": "flowstone.relay_outbox",
        "schedule": float(os.environ.get("FLOWSTONE_RELAY_SECONDS", "1")),
    },
    "flowstone-expire-approvals": {
        "task": "flowstone.expire_approvals",
        "schedule": float(os.environ.get("FLOWSTONE_SWEEP_SECONDS", "5")),
    },
    "flowstone-retry-notifications": {
        "task": "flowstone.retry_notifications",
        "schedule": float(os.environ.get("FLOWSTONE_SWEEP_SECONDS", "5")),
    },
}

FLOWSTONE = {
    "DEFINITIONS": [
        m for m in os.environ.get("FLOWSTONE_DEFINITIONS", "demo.assets").split(",") if m
    ],
    "IO_MANAGERS": {
        "default": {
            "CLASS": "flowstone.io.FilesystemIOManager",
            "OPTIONS": {"base_dir": str(DATA_DIR / "storage")},
        },
        "memory": {"CLASS": "flowstone.io.MemoryIOManager", "OPTIONS": {}},
    },
    "RESOURCES": {
        "catalog": {"CLASS": "demo.resources.ProductCatalog", "OPTIONS": {"currency": "EUR"}},
    },
    "STEP_LEASE_SECONDS": int(os.environ.get("FLOWSTONE_STEP_LEASE_SECONDS", "15")),
    "MAX_RECOVERIES": int(os.environ.get("FLOWSTONE_MAX_RECOVERIES", "3")),
    "REQUEUE_AFTER_SECONDS": int(os.environ.get("FLOWSTONE_REQUEUE_AFTER_SECONDS", "600")),
    "STEP_BATCH_MAX": int(os.environ.get("FLOWSTONE_STEP_BATCH_MAX", "500")),
    "STEP_BATCH_CONSUMERS": int(os.environ.get("FLOWSTONE_STEP_BATCH_CONSUMERS", "8")),
    "STEP_BATCH_SECONDS": int(os.environ.get("FLOWSTONE_STEP_BATCH_SECONDS", "10")),
    "WORKER_HEARTBEAT_SECONDS": int(os.environ.get("FLOWSTONE_WORKER_HEARTBEAT_SECONDS", "10")),
    "WORKER_SEEN_WITHIN_SECONDS": int(os.environ.get("FLOWSTONE_WORKER_SEEN_WITHIN_SECONDS", "60")),
    # JSON, e.g. {"ops": {"CLASS": "flowstone.notifications.WebhookChannel", "OPTIONS": {...}}}
    "NOTIFICATION_CHANNELS": json.loads(os.environ.get("FLOWSTONE_NOTIFICATION_CHANNELS", "{}")),
    "NOTIFICATION_BASE_URL": os.environ.get("FLOWSTONE_NOTIFICATION_BASE_URL", ""),
    "NOTIFICATION_RETRY_SECONDS": int(os.environ.get("FLOWSTONE_NOTIFICATION_RETRY_SECONDS", "30")),
    "NOTIFICATION_MAX_ATTEMPTS": int(os.environ.get("FLOWSTONE_NOTIFICATION_MAX_ATTEMPTS", "5")),
}
