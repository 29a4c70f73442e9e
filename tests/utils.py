"""Helpers of the suite's tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.core import signing
from django.db import connections, router

from django_rwsplit import conf, consistency
from django_rwsplit.health import registry as health_registry
from django_rwsplit.testing.cluster import LocalCluster


def fast_health(**overrides: object) -> dict[str, object]:
    """``RWSPLIT`` for tests on the real replicas: both replicas, quick checks."""
    return {
        "REPLICAS": ["replica1", "replica2"],
        "ROUTE_TEST_MIRRORS_TO_PRIMARY": False,
        "CHECK_INTERVAL": 0.2,
        "CHECK_TIMEOUT": 0.5,
        "READMIT_AFTER": 2,
        **overrides,
    }


def rotation() -> frozenset[str]:
    """The replicas in rotation now (starting this process's checks if needed)."""
    return health_registry.process_health(conf.get_config()).rotation.members


def start_health(*aliases: str) -> health_registry.ProcessHealth:
    """
    Start the health checks as a routed read does, and wait until ``aliases``
    (default: both replicas) are in rotation.
    """
    from tests.testapp.models import Item

    router.db_for_read(Item)
    state = health_registry.process_health(conf.get_config())
    wanted = set(aliases or ("replica1", "replica2"))
    wait_until(lambda: state.rotation.members >= wanted, timeout=10)
    return state


def token_issued(seconds_ago: float, lsn: int | None = None) -> str:
    """A genuine pin token, signed as if ``seconds_ago`` seconds ago (< 0: ahead)."""
    real = signing.TimestampSigner.timestamp
    signing.TimestampSigner.timestamp = lambda self: signing.b62_encode(  # type: ignore[method-assign]
        int(time.time() - seconds_ago)
    )
    try:
        return consistency.encode(lsn)
    finally:
        signing.TimestampSigner.timestamp = real  # type: ignore[method-assign]


def server_port(alias: str) -> int:
    """Return the port of the server that ``alias``'s connection talks to."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return int(cursor.fetchone()[0])


def wait_until(predicate, timeout: float, interval: float = 0.02) -> float:
    """Poll ``predicate`` until true; return seconds waited, fail at ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


@contextmanager
def fresh_cluster(offset: int) -> Iterator[LocalCluster]:
    """
    A three-node cluster of its own, ``offset`` ports above the suite's: for
    drills that change its roles for good (promote, re-point, rewind).
    """
    base = int(os.environ.get("RWSPLIT_CLUSTER_PORT") or 15432) + offset
    local = LocalCluster(primary_port=base)  # a directory of its own under /tmp
    try:
        local.start()
        yield local
    finally:
        local.destroy()
