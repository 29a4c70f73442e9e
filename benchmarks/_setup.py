"""Shared set-up for benchmarks: a local cluster and Django settings for it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django_rwsplit.testing.cluster import (  # noqa: E402
    ClusterError,
    LocalCluster,
    running_cluster,
)

DEFAULT_PORT = 19432


@contextmanager
def cluster(replicas: int = 2) -> Iterator[LocalCluster]:
    """Yield a running cluster: reuse RWSPLIT_CLUSTER_DIR or start a throwaway one."""
    port = int(os.environ.get("RWSPLIT_BENCH_PORT", DEFAULT_PORT))
    try:
        with running_cluster(port, replicas) as local:
            yield local
    except ClusterError as error:
        sys.exit(f"Cannot start the local PostgreSQL cluster: {error}")


def configure(
    cluster: LocalCluster,
    dbname: str = "postgres",
    django_settings: dict[str, Any] | None = None,
    primary_engine: str | None = None,
    **rwsplit: Any,
) -> None:
    """
    Configure Django for ``cluster`` with ``RWSPLIT`` options and set it up.

    The replicas use this project's engine; the primary Django's own unless
    ``primary_engine`` names another.
    """
    import django
    from django.conf import settings

    databases = cluster.django_databases(dbname)
    for alias, entry in databases.items():
        if alias != "default":
            entry["ENGINE"] = "django_rwsplit.backends.postgresql"
        elif primary_engine is not None:
            entry["ENGINE"] = primary_engine
    replicas = [alias for alias in databases if alias != "default"]
    # The same servers under other aliases, for a second cluster (a benchmark
    # of routing with several clusters: what is measured is the router).
    for alias, entry in list(databases.items()):
        databases[f"other_{alias}"] = {**entry}
    settings.configure(
        DATABASES=databases,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_rwsplit",
        ],
        DATABASE_ROUTERS=["django_rwsplit.routers.ReadWriteRouter"],
        REPLICA_DATABASES=replicas,
        RWSPLIT={"REPLICAS": replicas, **rwsplit},
        SECRET_KEY="benchmark",
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:6379/10",
            },
        },
        USE_TZ=True,
        **(django_settings or {}),
    )
    django.setup()


def note_views() -> list[Any]:
    """
    URL patterns of a write-then-read benchmark on the table ``notes``:
    ``write/`` inserts a row (in ``visible_on_replicas()`` with ``?visible=1``)
    and answers its id; ``read/<pk>/`` answers which server read and whether
    it saw the row. Call after :func:`configure`.
    """
    from django.db import connection, connections, router
    from django.http import HttpRequest, JsonResponse
    from django.urls import path

    from django_rwsplit import visible_on_replicas

    def insert() -> int:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO notes DEFAULT VALUES RETURNING id")
            return int(cursor.fetchone()[0])

    def write(request: HttpRequest) -> JsonResponse:
        if request.GET.get("visible"):
            with visible_on_replicas():
                return JsonResponse({"id": insert()})
        return JsonResponse({"id": insert()})

    def read(request: HttpRequest, pk: int) -> JsonResponse:
        from django.contrib.auth.models import User

        alias = router.db_for_read(User)
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT inet_server_port(), EXISTS(SELECT 1 FROM notes WHERE id=%s)",
                [pk],
            )
            port, visible = cursor.fetchone()
        return JsonResponse({"port": port, "visible": visible})

    return [path("write/", write), path("read/<int:pk>/", read)]


def table(rows: list[list[str]], header: list[str]) -> str:
    """Return ``rows`` as a Markdown table."""
    widths = [
        max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)
    ]
    lines = [
        "| "
        + " | ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))
        + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| "
        + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        + " |"
        for row in rows
    ]
    return "\n".join(lines)
