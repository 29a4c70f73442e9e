"""
Settings of the example project, read from the environment (django-environ).

DATABASE_URL   the primary (default: the local demo cluster on
               $RWSPLIT_CLUSTER_PORT, 15432 unless set, database rwsplit_demo)
REPLICA_URLS   comma-separated streaming replicas (default: the next two ports)
               -> database aliases "replica1", "replica2", ...
CONN_MAX_AGE   seconds a database connection is kept (default 0: per request)
CONN_HEALTH_CHECKS  Django's check of a kept connection before reuse (false)
DB_POOL        Django's psycopg pool on every database, max DB_POOL_SIZE
               connections per process and database (false; size 8)
ATOMIC_REQUESTS  each view in one transaction on the primary (false)
RWSPLIT_*      RWSPLIT settings: CONSISTENCY ("lsn"), STICKY_SECONDS (5),
               CHECK_INTERVAL (1), CHECK_TIMEOUT (1), MAX_LAG_SECONDS (5),
               READMIT_AFTER (3), BALANCER ("adaptive"),
               HEALTH_ENDPOINT_TOKEN (unset), METRICS (false: /metrics);
               the chaos tests set them
               (tests/chaos/)

``make demo`` starts that local cluster; see scripts/demo.sh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent

env = environ.Env()

SECRET_KEY = env.str("SECRET_KEY", default="django-rwsplit-example-not-secret")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

# -- Databases: one primary, N replicas ------------------------------------

_cluster_port = env.int("RWSPLIT_CLUSTER_PORT", default=15432)
_demo_db = env.str("RWSPLIT_DEMO_DB", default="rwsplit_demo")
_conn_max_age = env.int("CONN_MAX_AGE", default=0)
_health_checks = env.bool("CONN_HEALTH_CHECKS", default=False)
_pool = env.bool("DB_POOL", default=False)
_pool_size = env.int("DB_POOL_SIZE", default=8)
_atomic_requests = env.bool("ATOMIC_REQUESTS", default=False)


def _local_url(port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{_demo_db}"


def _database(url: str, *, replica: bool) -> dict[str, Any]:
    config: dict[str, Any] = env.db_url_config(url)
    config["OPTIONS"] = {"connect_timeout": 2, **config.get("OPTIONS", {})}
    config.setdefault("CONN_MAX_AGE", _conn_max_age)
    config["CONN_HEALTH_CHECKS"] = _health_checks
    # Django's PostgreSQL backend plus, on replicas, failover to another
    # replica (or the primary) when this replica cannot be reached, and on
    # every alias bounded waits in the pool; on the primary, a clear
    # PrimaryUnavailable error.
    config["ENGINE"] = "django_rwsplit.backends.postgresql"
    if _pool:
        # The pool needs CONN_MAX_AGE = 0; connections return to it per request.
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"]["pool"] = {"min_size": 1, "max_size": _pool_size}
    if replica:
        # Under Django's test runner, reuse the primary's test database.
        config["TEST"] = {"MIRROR": "default"}
    else:
        config["ATOMIC_REQUESTS"] = _atomic_requests
    return config


_replica_urls = [
    url
    for url in env.list(
        "REPLICA_URLS",
        default=[_local_url(_cluster_port + 1), _local_url(_cluster_port + 2)],
    )
    if url.strip()
]

DATABASES = {
    "default": _database(
        env.str("DATABASE_URL", default=_local_url(_cluster_port)), replica=False
    ),
}
for _number, _url in enumerate(_replica_urls, start=1):
    DATABASES[f"replica{_number}"] = _database(_url, replica=True)
REPLICAS = [alias for alias in DATABASES if alias != "default"]

# -- django-rwsplit ---------------------------------------------------------

DATABASE_ROUTERS = ["django_rwsplit.routers.ReadWriteRouter"]
RWSPLIT = {
    "REPLICAS": REPLICAS,
    # After a write, the client's reads stay on the primary this long.
    "STICKY_SECONDS": env.float("RWSPLIT_STICKY_SECONDS", default=5.0),
    # Health checks: every CHECK_INTERVAL seconds, each bounded by CHECK_TIMEOUT;
    # a replica lagging more than MAX_LAG_SECONDS leaves rotation and returns
    # after READMIT_AFTER good checks.
    "CHECK_INTERVAL": env.float("RWSPLIT_CHECK_INTERVAL", default=1.0),
    "CHECK_TIMEOUT": env.float("RWSPLIT_CHECK_TIMEOUT", default=1.0),
    "MAX_LAG_SECONDS": env.float("RWSPLIT_MAX_LAG_SECONDS", default=5.0),
    "READMIT_AFTER": env.int("RWSPLIT_READMIT_AFTER", default=3),
    # "time": the pin cookie sends the client's reads to the primary for
    # STICKY_SECONDS. "lsn": to any replica that has replayed its last write.
    "CONSISTENCY": env.str("RWSPLIT_CONSISTENCY", default="lsn"),
    # "adaptive": reads go where the load is lowest; "round_robin": by weight.
    "BALANCER": env.str("RWSPLIT_BALANCER", default="adaptive"),
    # visible_on_replicas(): how long a commit waits for every replica.
    "VISIBLE_WAIT": env.float("RWSPLIT_VISIBLE_WAIT", default=5.0),
}
# rwsplit/health/ and rwsplit/status/data/ also answer
# "Authorization: Bearer <token>" (at least 16 characters; unset: staff only).
# Prometheus metrics at /metrics (needs prometheus-client).
RWSPLIT["METRICS"] = env.bool("RWSPLIT_METRICS", default=False)
if _token := env.str("RWSPLIT_HEALTH_ENDPOINT_TOKEN", default=""):
    RWSPLIT["HEALTH_ENDPOINT_TOKEN"] = _token

# -- Django -----------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rwsplit",
    "example_project.shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django_rwsplit.middleware.PinPrimaryMiddleware",
    # Records every SQL statement of the request and where it ran.
    "example_project.shop.middleware.QueryLogMiddleware",
    # Primary unreachable -> 503 instead of 500.
    "example_project.shop.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

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
                "example_project.shop.context_processors.rwsplit",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Flash messages live in a cookie, so showing one costs no query.
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "rwsplit": {"format": "[rwsplit] %(levelname)s %(message)s"},
    },
    "handlers": {
        "rwsplit_console": {"class": "logging.StreamHandler", "formatter": "rwsplit"},
    },
    "loggers": {
        # Server errors (500s) with their tracebacks, also with DEBUG off.
        "django.request": {
            "handlers": ["rwsplit_console"],
            "level": "ERROR",
            "propagate": False,
        },
        "django_rwsplit": {
            "handlers": ["rwsplit_console"],
            "level": "INFO",
            "propagate": False,
        },
    },
}
