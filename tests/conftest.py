from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_rwsplit import pinning, process_state
from django_rwsplit.testing.cluster import LocalCluster

pytest_plugins = ["django_rwsplit.testing.fixtures"]


@pytest.fixture
def cluster(rwsplit_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The local cluster, healed of injected faults after the test."""
    # Imported here: at module level it would precede the plugin's own
    # import (pytest_plugins) and escape pytest's assertion rewriting.
    from django_rwsplit.testing.fixtures import heal

    # The previous test's flush (TRUNCATE) must be replayed before a test
    # pauses a replica, or reads there would wait on its lock for ever.
    rwsplit_cluster.wait_caught_up(timeout=60)
    yield rwsplit_cluster
    heal(rwsplit_cluster)
    process_state.reset()


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
    # A write outside any scope (another test's, the database flush) pins
    # this thread's reads for STICKY_SECONDS: each test starts unpinned.
    pinning.forget_unscoped_write()
    # Another test's monitor and latencies must not steer this one's reads.
    process_state.reset()
    yield
    process_state.reset()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, rwsplit_cluster: LocalCluster) -> None:
    """Let the replicas replay the freshly created test database before tests."""
    rwsplit_cluster.wait_caught_up(timeout=60)


@pytest.fixture
def atomic_requests() -> Iterator[None]:
    """The primary runs each view in a transaction (``ATOMIC_REQUESTS``)."""
    from django.db import connections

    settings_dict = connections.settings["default"]
    settings_dict["ATOMIC_REQUESTS"] = True
    try:
        yield
    finally:
        settings_dict["ATOMIC_REQUESTS"] = False


@pytest.fixture
def replay_paused(cluster: LocalCluster) -> Iterator[None]:
    """Both replicas in rotation, then their replay paused (the cluster heals)."""
    from tests.utils import start_health

    start_health()
    for replica in ("replica1", "replica2"):
        cluster.pause_replay(replica)
    yield


# Test modules whose subject does not depend on Django's version (pure logic,
# the health probes and rounds, the command's output, multiprocess metrics):
# marked ``once``, so that only one session of the matrix runs them
# (noxfile.py: the Django 5.2 session, as for ``long``).
ONCE = frozenset(
    {
        "test_apps",
        "test_balancing",
        "test_celery_policies",
        "test_daemon_pool",
        "test_forks",
        "test_health",
        "test_load",
        "test_metrics_multiprocess",
        "test_monitor",
        "test_nodes",
        "test_notify",
        "test_observe",
        "test_pin_reasons",
        "test_planner",
        "test_policy",
        "test_probes",
        "test_process_state",
        "test_reasons",
        "test_release",
        "test_replica_health_command",
        "test_report",
        "test_retry",
        "test_rotation",
        "test_shared",
        "test_stale_rounds",
        "test_task_scopes",
        "test_tracker",
        "test_verdict",
        "test_writes",
    }
)


# Drills of a running system that take a minute and do not depend on Django's
# version (a failover, under load, visible commits under real servers, two
# clusters): marked ``once`` like the modules above.
DRILLS = frozenset(
    {
        "test_failover",
        "test_failover_under_load",
        "test_several_clusters",
        "test_visible_on_replicas_servers",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is None:
            continue
        name = item.module.__name__.rpartition(".")[2]
        if name in ONCE or name in DRILLS:
            item.add_marker(pytest.mark.once)
