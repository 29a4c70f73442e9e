"""A project with two clusters: shop on the default one, analytics on its own."""

from __future__ import annotations

import os

FIRST = int(os.environ.get("RWSPLIT_CLUSTER_PORT", "15432"))
SECOND = int(os.environ.get("RWSPLIT_SECOND_CLUSTER_PORT", str(FIRST + 10)))
SECRET_KEY = "django-rwsplit-clusters"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def database(port: int, mirror: str | None = None) -> dict[str, object]:
    entry: dict[str, object] = {
        "ENGINE": "django_rwsplit.backends.postgresql",
        # gunicorn, started by the tests, is pointed at their test database.
        "NAME": os.environ.get("RWSPLIT_CLUSTERS_DB", "rwsplit_clusters"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPTIONS": {"connect_timeout": 2},
    }
    if mirror:
        entry["TEST"] = {"MIRROR": mirror}
    return entry


DATABASES = {
    "default": database(FIRST),
    "replica1": database(FIRST + 1, "default"),
    "replica2": database(FIRST + 2, "default"),
    "analytics": database(SECOND),
    "analytics_replica1": database(SECOND + 1, "analytics"),
    "analytics_replica2": database(SECOND + 2, "analytics"),
}
DATABASE_ROUTERS = ["django_rwsplit.routers.ReadWriteRouter"]
RWSPLIT = {
    "REPLICAS": ["replica1", "replica2"],
    "ROUTE_TEST_MIRRORS_TO_PRIMARY": False,
    "CHECK_INTERVAL": 0.2,
    "CHECK_TIMEOUT": 0.5,
    "READMIT_AFTER": 2,
    "STICKY_SECONDS": 5.0,
    # These tests count where reads go: a fixed order, not the load's.
    "BALANCER": "round_robin",
    "HEALTH_ENDPOINT_TOKEN": "a-health-token-of-32-characters!",
    "CLUSTERS": {
        "analytics": {
            "PRIMARY": "analytics",
            "REPLICAS": ["analytics_replica1", "analytics_replica2"],
            "APPS": ["analytics"],
            # Its own health bound: tighter than the default cluster's 5 s.
            "MAX_LAG_SECONDS": 2.0,
        }
    },
}
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django_rwsplit",
    "shop",
    "analytics",
]
MIDDLEWARE = [
    "django_rwsplit.middleware.PinPrimaryMiddleware",
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
