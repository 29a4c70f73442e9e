"""Settings as a user would write them: replicas configured as test mirrors."""

from __future__ import annotations

import os

PORT = int(os.environ.get("RWSPLIT_CLUSTER_PORT", "15432"))
SECRET_KEY = "user-project"
USE_TZ = True
ROOT_URLCONF = "notes.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def node(port: int) -> dict[str, object]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "userproject",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }


DATABASES = {
    "default": node(PORT),
    "replica1": {
        **node(PORT + 1),
        "ENGINE": "django_rwsplit.backends.postgresql",
        "TEST": {"MIRROR": "default"},
    },
    "replica2": {
        **node(PORT + 2),
        "ENGINE": "django_rwsplit.backends.postgresql",
        "TEST": {"MIRROR": "default"},
    },
}
DATABASE_ROUTERS = ["django_rwsplit.routers.ReadWriteRouter"]
RWSPLIT = {"REPLICAS": ["replica1", "replica2"]}
if os.environ.get("USERPROJECT_DISABLE_MIRROR_ROUTING"):
    RWSPLIT["ROUTE_TEST_MIRRORS_TO_PRIMARY"] = False
    # Outside a request, a write also pins its thread's reads to the primary
    # for STICKY_SECONDS: off too, so that only the mirror routing is missing.
    RWSPLIT["STICKY_SECONDS"] = 0
    TEST_RUNNER = "notes.runner.ReplicasInRotationRunner"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_rwsplit",
    "notes",
]
MIDDLEWARE = ["django_rwsplit.middleware.PinPrimaryMiddleware"]
