from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connections

from django_rwsplit.health import registry
from django_rwsplit.testing.cluster import LocalCluster

pytest_plugins = ["django_rwsplit.testing.fixtures"]


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


def server_port(alias: str) -> int:
    """Return the port of the server that ``alias``'s connection talks to."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return int(cursor.fetchone()[0])


@pytest.fixture
def cluster(rwsplit_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The local cluster, healed of injected faults after the test."""
    from django_rwsplit.testing.fixtures import heal

    # The previous test's flush (TRUNCATE) must be replayed before a test
    # pauses a replica, or reads there would wait on its lock for ever.
    rwsplit_cluster.wait_caught_up(timeout=60)
    yield rwsplit_cluster
    heal(rwsplit_cluster)
    registry.reset()


@pytest.fixture
def ports(rwsplit_cluster: LocalCluster) -> dict[str, int]:
    """Map each alias to its server port."""
    return {
        "default": rwsplit_cluster.primary.port,
        "replica1": rwsplit_cluster.replicas[0].port,
        "replica2": rwsplit_cluster.replicas[1].port,
    }


@pytest.fixture(autouse=True)
def _fresh_health() -> Iterator[None]:
    yield
    registry.reset()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, rwsplit_cluster: LocalCluster) -> None:
    """Let the replicas replay the freshly created test database before tests."""
    rwsplit_cluster.wait_caught_up(timeout=60)


def wait_until(predicate, timeout: float, interval: float = 0.02) -> float:
    """Poll ``predicate`` until true; return seconds waited, fail at ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started
