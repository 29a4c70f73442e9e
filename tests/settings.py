"""Settings for django-rwsplit's own test suite, against the local cluster."""

from __future__ import annotations

import os

PRIMARY_PORT = int(os.environ.get("RWSPLIT_CLUSTER_PORT", "15432"))
# A Celery worker started by the tests uses the test database by this name.
DATABASE_NAME = os.environ.get("RWSPLIT_DB_NAME", "rwsplit")
SECRET_KEY = "django-rwsplit-tests"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def database(port: int, *, replica: bool) -> dict[str, object]:
    """Return a DATABASES entry for one node of the local cluster."""
    entry: dict[str, object] = {
        "ENGINE": "django_rwsplit.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPTIONS": {"connect_timeout": 2},
    }
    if replica:
        entry["TEST"] = {"MIRROR": "default"}
    return entry


DATABASES = {
    "default": database(PRIMARY_PORT, replica=False),
    "replica1": database(PRIMARY_PORT + 1, replica=True),
    "replica2": database(PRIMARY_PORT + 2, replica=True),
    # A node in recovery, named as the primary by tests of a demoted primary.
    "demoted": database(PRIMARY_PORT + 1, replica=True),
}
DATABASE_ROUTERS = ["django_rwsplit.routers.ReadWriteRouter"]
RWSPLIT = {
    "REPLICAS": ["replica1", "replica2"],
    # This suite tests real replication, so test mirrors read the replicas.
    "ROUTE_TEST_MIRRORS_TO_PRIMARY": False,
    "CHECK_INTERVAL": 0.2,
    "CHECK_TIMEOUT": 0.5,
    "READMIT_AFTER": 2,
    "STICKY_SECONDS": 5.0,
}
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django_rwsplit",
    "tests.testapp",
]
if os.environ.get("RWSPLIT_CELERY_INTEGRATION", "on") != "off":
    INSTALLED_APPS.append("django_rwsplit.contrib.celery")
try:
    import django.tasks  # noqa: F401 - Django 6.0 and later
except ImportError:
    pass
else:
    INSTALLED_APPS.append("django_rwsplit.contrib.django_tasks")
    TASKS = {"default": {"BACKEND": "tests.django_tasks_app.ThreadBackend"}}
MIDDLEWARE = [
    "django_rwsplit.middleware.PinPrimaryMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
]
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("RWSPLIT_REDIS_URL", "redis://127.0.0.1:6379/9"),
    },
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"django_rwsplit": {"handlers": ["null"], "level": "INFO"}},
}
