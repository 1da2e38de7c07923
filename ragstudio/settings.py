"""Settings, all from RAGSTUDIO_* environment variables with embedded defaults.

Defaults run everything on one machine: SQLite (WAL) for Django and the django-q2 ORM
broker, LanceDB and tantivy under RAGSTUDIO_DATA_DIR, fastembed on the CPU. The same code
scales out with DATABASE_URL (PostgreSQL), RAGSTUDIO_REDIS_URL (django-q2 broker) and
RAGSTUDIO_STORAGE_URI (s3://bucket/prefix, with the standard AWS_* variables): see
docs/deploy.md.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from ragstudio.core import bounds
from ragstudio.env import (
    RagStudioConfig,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
    secret_key_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DATA_DIR = env_path("RAGSTUDIO_DATA_DIR", BASE_DIR / "data")
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    configured = env_str("RAGSTUDIO_SECRET_KEY", "")
    if configured:
        return configured
    # No key configured: keep one per data directory so sessions survive restarts.
    return secret_key_file(DATA_DIR / "secret_key")


SECRET_KEY = _secret_key()
DEBUG = env_bool("RAGSTUDIO_DEBUG", False)
ALLOWED_HOSTS = env_list("RAGSTUDIO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("RAGSTUDIO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "ninja",  # /api/docs renders Swagger UI from ninja's own static files, not a CDN
    "csp",
    "django_q",
    "axes",
    "knowledge_bases",
    "ingestion",
    "search",
]

MIDDLEWARE = [
    # Each request's id, origin (for the audit trail), metrics and log line.
    "ragstudio.monitoring.RequestContextMiddleware",
    "ragstudio.middleware.RequestSizeLimitMiddleware",  # before anything reads the body
    # Django reads multipart bodies of POST only: a document's new version is a PUT.
    "ninja.compatibility.files.fix_request_files_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Per-user searches and uploads a minute, before a body is read.
    "ragstudio.middleware.RateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into a 429 page.
    "axes.middleware.AxesMiddleware",
]

# A strict Content-Security-Policy: scripts, styles and everything else from this origin
# only; no inline scripts or style attributes (the templates have none; htmx is told not
# to inject its indicator styles or to evaluate code).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Behind TLS (directly or through a proxy), turn these on; `manage.py check --deploy` is
# clean with them (docs/deploy.md).
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("RAGSTUDIO_SECURE_COOKIES", False)
SECURE_SSL_REDIRECT = env_bool("RAGSTUDIO_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("RAGSTUDIO_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("RAGSTUDIO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("RAGSTUDIO_HSTS_PRELOAD", False)
if env_bool("RAGSTUDIO_BEHIND_TLS_PROXY", False):
    # Trust the proxy's X-Forwarded-Proto: only when every request comes through it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a login while it is locked out
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling: after this many failed passwords for one username from one address,
# logins for that pair are refused for the cool-off time (a success resets the count).
AXES_FAILURE_LIMIT = env_int("RAGSTUDIO_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("RAGSTUDIO_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
# Behind N proxies (the TLS proxy the deployment guide recommends: 1), the client's address
# is the one the outermost proxy saw, from X-Forwarded-For; without it every login would
# come from the proxy, and five wrong passwords would lock a user out for everyone.
TRUSTED_PROXY_COUNT = env_int("RAGSTUDIO_TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=5)
AXES_CLIENT_IP_CALLABLE = "ragstudio.auth.client_ip"

# Messages live in the server-side session: one of them shows a new API token once, and
# the default storage would put it in a cookie the browser keeps.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "ragstudio.urls"
WSGI_APPLICATION = "ragstudio.wsgi.application"

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

# SQLite needs WAL, IMMEDIATE transactions and a busy timeout to take concurrent worker
# writes: with Django's defaults, most task writes fail with "database is locked".
_SQLITE_OPTIONS: dict[str, Any] = {
    "transaction_mode": "IMMEDIATE",
    "timeout": env_float("RAGSTUDIO_SQLITE_TIMEOUT", 5.0, minimum=0.1),
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}

_database_url = env_str("DATABASE_URL", "")
if _database_url:
    try:
        _default_db: dict[str, Any] = dict(dj_database_url.parse(_database_url, conn_max_age=60))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL: {exc}") from None
else:
    _default_db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DATA_DIR / "db.sqlite3"),
    }
if _default_db["ENGINE"] == "django.db.backends.sqlite3":
    _default_db["OPTIONS"] = {**_SQLITE_OPTIONS, **_default_db.get("OPTIONS", {})}
    _default_db["CONN_MAX_AGE"] = 0
DATABASES = {"default": _default_db}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "kb-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
# collectstatic fills it where an operator runs it; without it WhiteNoise warns at every
# start that the directory is missing.
STATIC_ROOT.mkdir(exist_ok=True)
# WhiteNoise serves static files from the app and the installed packages (Swagger UI's)
# with DEBUG off, under any server, with no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Uploads are streamed to disk past this size and hashed while they are stored.
RAGSTUDIO_MAX_UPLOAD_BYTES = env_int("RAGSTUDIO_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, minimum=1)
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("RAGSTUDIO_MAX_UPLOAD_FILES", 1000, minimum=1)
# One request's whole body (many files at once): refused with 413 before it is read.
RAGSTUDIO_MAX_REQUEST_BYTES = env_int("RAGSTUDIO_MAX_REQUEST_BYTES", 1024**3, minimum=1)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Request bodies over that are spooled here, not to /tmp: the hourly GC removes what a
# killed web process left (knowledge_bases/generations/storage.py uploads_sweep).
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_HANDLERS = [
    "ragstudio.middleware.FileSizeLimitUploadHandler",  # stops a file over the limit early
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]


def env_bounded(name: str, default: int, bound: bounds.Bound) -> int:
    return env_int(name, default, minimum=bound.low, maximum=bound.high)


def _storage() -> tuple[str, dict[str, str]]:
    """RAGSTUDIO_STORAGE_URI (s3://bucket/prefix: every generation's LanceDB table and BM25
    index, and the uploads, shared by all hosts) and how to reach it, from the standard
    AWS_* variables, so one deployment works against S3, MinIO, Ceph or a test server."""
    uri = env_str("RAGSTUDIO_STORAGE_URI", "").rstrip("/")
    if uri and (not uri.startswith("s3://") or len(uri) <= len("s3://")):
        raise ImproperlyConfigured(
            f"RAGSTUDIO_STORAGE_URI must look like s3://bucket/prefix, got {uri!r}"
        )
    options: dict[str, str] = {}
    endpoint = env_str("AWS_ENDPOINT_URL", "")
    if endpoint:
        options["aws_endpoint"] = endpoint
    region = env_str("AWS_REGION", "") or env_str("AWS_DEFAULT_REGION", "")
    if region:
        options["aws_region"] = region
    key = env_str("AWS_ACCESS_KEY_ID", "")
    if key:
        options["aws_access_key_id"] = key
        options["aws_secret_access_key"] = env_str("AWS_SECRET_ACCESS_KEY", "")
    if env_bool("AWS_ALLOW_HTTP", False) or endpoint.startswith("http://"):
        options["allow_http"] = "true"
    return uri, options


_STORAGE_URI, _STORAGE_OPTIONS = _storage()

RAGSTUDIO: RagStudioConfig = {
    "UPLOAD_DIR": DATA_DIR / "uploads",
    # Under RAGSTUDIO_STORAGE_URI when it is set; RAGSTUDIO_LANCEDB_URI still wins.
    "LANCEDB_URI": env_str(
        "RAGSTUDIO_LANCEDB_URI",
        f"{_STORAGE_URI}/lancedb" if _STORAGE_URI else str(DATA_DIR / "lancedb"),
    ),
    # With RAGSTUDIO_STORAGE_URI, a local cache of the indexes in the object store.
    "BM25_DIR": DATA_DIR / "bm25",
    # Export archives and uploaded archives to import (with RAGSTUDIO_STORAGE_URI, a
    # local cache of those in the object store, which every host reaches).
    "TRANSFER_DIR": DATA_DIR / "transfers",
    "STORAGE_URI": _STORAGE_URI,
    "STORAGE_OPTIONS": _STORAGE_OPTIONS,
    # Model files (the bundled model's directory, the local-fast build, fastembed's
    # cache): a cache that hosts or data directories may share.
    "MODEL_DIR": Path(env_str("RAGSTUDIO_MODEL_DIR", str(DATA_DIR / "models"))),
    # Embedder spec for new knowledge bases: "local-fast" (the bundled all-MiniLM-L6-v2 in
    # its fused int8 build, the same quality several times faster: docs/benchmarks.md),
    # "local" (the bundled model as packaged), "fastembed:<model name>" (needs a network
    # once) or "openai:<model>". Existing knowledge bases keep theirs until rebuilt.
    "EMBEDDER": env_str("RAGSTUDIO_EMBEDDER", "local-fast"),
    # Web and worker processes load the local models in use before they take work (the
    # first search would otherwise wait seconds for them); /readyz waits for it.
    "PRELOAD_MODELS": env_bool("RAGSTUDIO_PRELOAD_MODELS", True),
    # Embedders users other than staff may choose (shell-style patterns, e.g. "openai:*").
    "EMBEDDERS_FOR_USERS": env_list("RAGSTUDIO_EMBEDDERS_FOR_USERS", ["local", "local-fast"]),
    # Per-user quotas (staff are exempt; 0: no limit): knowledge bases owned, and bytes
    # of documents stored across them.
    "QUOTA_KNOWLEDGE_BASES": env_int("RAGSTUDIO_QUOTA_KNOWLEDGE_BASES", 20, minimum=0),
    # What a knowledge-base archive may unpack to (kb import): a bigger one is refused
    # before anything is written.
    "IMPORT_MAX_BYTES": env_int("RAGSTUDIO_IMPORT_MAX_BYTES", 20 * 1024**3, minimum=1024),
    "QUOTA_BYTES": env_int("RAGSTUDIO_QUOTA_BYTES", 2 * 1024**3, minimum=0),
    "EMBED_THREADS": env_int("RAGSTUDIO_EMBED_THREADS", 0, minimum=0),  # 0: all cores
    # Threads of the model embedding a search's query (0: all cores). A query is a few
    # words: spread over the cores it gains less than it costs the engines working beside
    # it (hybrid's BM25 and vector search), so one thread by default (docs/benchmarks.md).
    "QUERY_EMBED_THREADS": env_int("RAGSTUDIO_QUERY_EMBED_THREADS", 1, minimum=0),
    "OPENAI_BASE_URL": env_str("RAGSTUDIO_OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "OPENAI_API_KEY": env_str("RAGSTUDIO_OPENAI_API_KEY", ""),
    "OPENAI_DIMENSIONS": env_int("RAGSTUDIO_OPENAI_DIMENSIONS", 0, minimum=0),
    "OPENAI_TIMEOUT": env_float("RAGSTUDIO_OPENAI_TIMEOUT", 60.0, minimum=0.1),
    "OPENAI_MAX_RETRIES": env_int("RAGSTUDIO_OPENAI_MAX_RETRIES", 6, minimum=0),
    # Concurrent requests during ingestion: at most this many in flight (the throttle
    # finds the provider's real limit below it), within the provider's published limits
    # (0: not known; a 429 teaches the throttle instead).
    "OPENAI_MAX_CONCURRENCY": env_int("RAGSTUDIO_OPENAI_MAX_CONCURRENCY", 8, minimum=1),
    # Texts per request at most (remote requests start at RAGSTUDIO_EMBED_BATCH_SIZE and
    # grow while the provider keeps up; a job's embed_batch_size applies to local models).
    "OPENAI_MAX_BATCH_ITEMS": env_bounded(
        "RAGSTUDIO_OPENAI_MAX_BATCH_ITEMS", 256, bounds.EMBED_BATCH_SIZE
    ),
    "OPENAI_REQUESTS_PER_MINUTE": env_int("RAGSTUDIO_OPENAI_REQUESTS_PER_MINUTE", 0, minimum=0),
    "OPENAI_TOKENS_PER_MINUTE": env_int("RAGSTUDIO_OPENAI_TOKENS_PER_MINUTE", 0, minimum=0),
    "STORE_BATCH_SIZE": env_bounded("RAGSTUDIO_STORE_BATCH_SIZE", 5000, bounds.STORE_BATCH_SIZE),
    "EMBED_BATCH_SIZE": env_bounded("RAGSTUDIO_EMBED_BATCH_SIZE", 32, bounds.EMBED_BATCH_SIZE),
    "CHUNK_SIZE": env_bounded("RAGSTUDIO_CHUNK_SIZE", bounds.DEFAULT_CHUNK_SIZE, bounds.CHUNK_SIZE),
    "CHUNK_OVERLAP": env_bounded(
        "RAGSTUDIO_CHUNK_OVERLAP", bounds.DEFAULT_CHUNK_OVERLAP, bounds.CHUNK_OVERLAP
    ),
    # A running job whose heartbeat is older than this is taken over (or failed).
    "HEARTBEAT_STALE_SECONDS": env_int("RAGSTUDIO_HEARTBEAT_STALE_SECONDS", 60, minimum=5),
    "JOB_MAX_ATTEMPTS": env_int("RAGSTUDIO_JOB_MAX_ATTEMPTS", 3, minimum=1),
    # GC keeps archived generations younger than this whatever the retention says.
    "GC_MIN_AGE_SECONDS": env_int("RAGSTUDIO_GC_MIN_AGE_SECONDS", 3600, minimum=0),
    # A replaced document version's rows stay (hidden) this long, so a search that began
    # before the switch still finds the version it looked for.
    "VERSION_GRACE_SECONDS": env_int("RAGSTUDIO_VERSION_GRACE_SECONDS", 60, minimum=0),
    # Sources: folders (and local Git repositories) a source may read, under these only;
    # hosts or networks a source may reach although private or loopback ("host:port",
    # "host", or a CIDR such as "10.0.0.0/8"); one request's timeout; items per listing.
    "SOURCE_FOLDER_ROOTS": [
        Path(p).expanduser()
        for p in env_list("RAGSTUDIO_SOURCE_FOLDER_ROOTS", [str(DATA_DIR / "sources")])
    ],
    "FETCH_ALLOW": env_list("RAGSTUDIO_FETCH_ALLOW", []),
    "FETCH_TIMEOUT_SECONDS": env_float("RAGSTUDIO_FETCH_TIMEOUT_SECONDS", 20.0, minimum=0.5),
    "SOURCE_MAX_ITEMS": env_int("RAGSTUDIO_SOURCE_MAX_ITEMS", 100_000, minimum=1),
    # Vector search: exact below this many rows; an IVF_HNSW_SQ index from here up.
    "ANN_MIN_ROWS": env_int("RAGSTUDIO_ANN_MIN_ROWS", 10_000, minimum=256),
    "ANN_NPROBES": env_int("RAGSTUDIO_ANN_NPROBES", 20, minimum=1),
    "ANN_REFINE_FACTOR": env_int("RAGSTUDIO_ANN_REFINE_FACTOR", 5, minimum=1, maximum=100),
    # Candidates each partition's HNSW graph keeps while it searches (at least the rows
    # asked for): at 1,000,000 rows recall@10 0.889 with LanceDB's default, 0.990 with 400,
    # in the same time (docs/benchmarks.md).
    "ANN_EF": env_int("RAGSTUDIO_ANN_EF", 400, minimum=10, maximum=10_000),
    # A document that takes longer than this to parse fails alone (0: no budget, parse in
    # the worker's own process).
    "PARSE_TIMEOUT_SECONDS": env_float("RAGSTUDIO_PARSE_TIMEOUT_SECONDS", 60.0, minimum=0.0),
    # The parsing process's memory (address space, MB): a document that needs more fails
    # alone ("ran out of memory"). OCR runs within it too.
    "PARSE_MEMORY_MB": env_int("RAGSTUDIO_PARSE_MEMORY_MB", 3072, minimum=256),
    # Per-user limits (staff and the command line are exempt): jobs waiting, and rebuilds
    # queued or running, across all knowledge bases (0: no limit); a request past one gets
    # 429 with Retry-After.
    "USER_QUEUED_JOBS": env_int("RAGSTUDIO_USER_QUEUED_JOBS", 20, minimum=0),
    "USER_REBUILDS": env_int("RAGSTUDIO_USER_REBUILDS", 2, minimum=0),
    # Evaluation runs queued or running per user (the API and the quality page queue them).
    "USER_EVALUATIONS": env_int("RAGSTUDIO_USER_EVALUATIONS", 2, minimum=0),
    "USER_LIMIT_RETRY_SECONDS": env_int("RAGSTUDIO_USER_LIMIT_RETRY_SECONDS", 30, minimum=1),
    # Requests a minute per user (0: no limit; staff exempt): searches on every surface
    # (API, OpenAI-compatible, Dify, MCP, the search page) and uploads; past one, 429.
    "USER_SEARCHES_PER_MINUTE": env_int("RAGSTUDIO_USER_SEARCHES_PER_MINUTE", 600, minimum=0),
    "USER_UPLOADS_PER_MINUTE": env_int("RAGSTUDIO_USER_UPLOADS_PER_MINUTE", 60, minimum=0),
    # Characters of text one document may yield once parsed (0: no bound): an Office file
    # or an archive of a few megabytes can expand to gigabytes of text.
    "MAX_DOCUMENT_CHARS": env_int("RAGSTUDIO_MAX_DOCUMENT_CHARS", 20_000_000, minimum=0),
    # Parse seconds for a whole job (0: no limit); past it, each further document has
    # PARSE_AFTER_BUDGET_SECONDS, so one upload of many slow files cannot hold the worker.
    "JOB_PARSE_BUDGET_SECONDS": env_float("RAGSTUDIO_JOB_PARSE_BUDGET_SECONDS", 600.0, minimum=0.0),
    "PARSE_AFTER_BUDGET_SECONDS": env_float(
        "RAGSTUDIO_PARSE_AFTER_BUDGET_SECONDS", 2.0, minimum=0.1
    ),
    # A job that has run this long lets a waiting job of another user run (one job, then
    # it goes on, and may yield again a window later): a long rebuild delays another
    # user's one file by about one window, not by the whole rebuild.
    "JOB_WINDOW_SECONDS": env_float("RAGSTUDIO_JOB_WINDOW_SECONDS", 10.0, minimum=0.0),
    # Query embeddings kept in memory per process (same text, same model: no model call).
    "QUERY_CACHE_SIZE": env_int("RAGSTUDIO_QUERY_CACHE_SIZE", 2048, minimum=0),
}

_task_timeout = env_int("RAGSTUDIO_TASK_TIMEOUT", 6 * 3600, minimum=10)
Q_CLUSTER: dict[str, Any] = {
    # Clusters of one installation share the name (with Redis it names the queue's key).
    "name": env_str("RAGSTUDIO_QUEUE_NAME", "ragstudio"),
    "workers": env_int("RAGSTUDIO_WORKERS", 1, minimum=1),
    # Embedding uses every core already; one task at a time per worker process.
    "recycle": 50,
    "timeout": _task_timeout,
    # retry must exceed timeout, or a long task is delivered twice while it still runs.
    "retry": _task_timeout + 300,
    "max_attempts": env_int("RAGSTUDIO_TASK_MAX_ATTEMPTS", 3, minimum=1),
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 500,
    "poll": 0.5,
    "sync": env_bool("RAGSTUDIO_Q_SYNC", False),
}
_redis_url = env_str("RAGSTUDIO_REDIS_URL", "")
if _redis_url:
    if not _redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            f"RAGSTUDIO_REDIS_URL must be a redis:// URL, got {_redis_url!r}"
        )
    # Redis hands a task to one worker (BLPOP): one lost with its worker is queued again
    # by the reaper from the job's row (a queued job without a live task, or a running one
    # whose heartbeat stopped), so jobs keep their at-least-once delivery.
    Q_CLUSTER["redis"] = _redis_url
else:
    Q_CLUSTER["orm"] = "default"

# `manage.py serve`: gunicorn worker processes for the web (pages and API).
WEB_WORKERS = env_int("RAGSTUDIO_WEB_WORKERS", 2, minimum=1, maximum=64)
# Threads per web process: a client that sends its request slowly holds one thread, not a
# process, so this many slow clients per process still leave the others served.
WEB_THREADS = env_int("RAGSTUDIO_WEB_THREADS", 32, minimum=1, maximum=256)
WEB_TIMEOUT = env_int("RAGSTUDIO_WEB_TIMEOUT", 120, minimum=5)
# One log line per request (with its id, user, status and time): off unless asked for,
# or unless logs are JSON.
ACCESS_LOG = env_bool("RAGSTUDIO_ACCESS_LOG", False)
# /metrics: served to these networks (loopback by default; empty: none), or to a scraper
# that sends `Authorization: Bearer <RAGSTUDIO_METRICS_TOKEN>`.
METRICS_TOKEN = env_str("RAGSTUDIO_METRICS_TOKEN", "")
try:
    METRICS_ALLOW = [
        ipaddress.ip_network(n, strict=False)
        for n in env_list("RAGSTUDIO_METRICS_ALLOW", ["127.0.0.0/8", "::1/128"])
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"RAGSTUDIO_METRICS_ALLOW: {exc}") from None
# Audit events older than this many days are deleted by the daily maintenance task.
AUDIT_RETENTION_DAYS = env_int("RAGSTUDIO_AUDIT_RETENTION_DAYS", 365, minimum=1)
# How long an export's archive waits to be downloaded before the daily cleanup deletes it.
EXPORT_RETENTION_HOURS = env_int("RAGSTUDIO_EXPORT_RETENTION_HOURS", 168, minimum=1)

# "json": one JSON object per line (with the request id, user, knowledge base, job and
# durations where a line has them); "plain" (the default): text.
LOG_FORMAT = env_str("RAGSTUDIO_LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured("RAGSTUDIO_LOG_FORMAT is plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"origin": {"()": "ragstudio.core.origin.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["origin"],
        }
    },
    # Libraries log at WARNING and up (the model build's quantizer logs each tensor at
    # INFO on the root logger); the app's own modules at RAGSTUDIO_LOG_LEVEL.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        **{
            name: {"level": env_str("RAGSTUDIO_LOG_LEVEL", "INFO")}
            for name in ("ragstudio", "ingestion", "knowledge_bases", "search")
        },
        # The worker's line per task and per schedule tick (7 a minute when idle).
        "django-q": {"level": env_str("RAGSTUDIO_QUEUE_LOG_LEVEL", "WARNING")},
        "axes": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}
