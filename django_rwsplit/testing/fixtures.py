"""
pytest fixtures that run tests against the local primary + replicas.

Enable with ``pytest_plugins = ["django_rwsplit.testing.fixtures"]``. The
cluster starts once per session on ``RWSPLIT_CLUSTER_PORT`` (default 15432)
and its replicas, or is reused when ``RWSPLIT_CLUSTER_DIR`` names a running
one (``python -m django_rwsplit.testing up``). ``rwsplit_second_cluster``
starts another, independent one (its own primary and replicas).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from django_rwsplit.testing.cluster import ClusterError, LocalCluster, running_cluster


@pytest.fixture(scope="session")
def rwsplit_cluster() -> Iterator[LocalCluster]:
    """Return the running local cluster, starting it for this session if needed."""
    port = int(os.environ.get("RWSPLIT_CLUSTER_PORT", "15432"))
    try:
        with running_cluster(port) as cluster:
            yield cluster
    except ClusterError as error:
        pytest.exit(f"Cannot start the local PostgreSQL cluster: {error}", 2)


@pytest.fixture(scope="session")
def rwsplit_second_cluster(rwsplit_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """
    A second, independent primary + replicas, for projects with several clusters.

    Starts on ``RWSPLIT_SECOND_CLUSTER_PORT`` (default: the first cluster's
    primary port + 10) when first asked for, and is destroyed after the session.
    """
    default = rwsplit_cluster.primary.port + 10
    port = int(os.environ.get("RWSPLIT_SECOND_CLUSTER_PORT", str(default)))
    try:
        cluster = LocalCluster(primary_port=port)
        cluster.start()
    except ClusterError as error:
        pytest.exit(f"Cannot start the second local PostgreSQL cluster: {error}", 2)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    rwsplit_cluster: LocalCluster,
) -> None:
    """Make pytest-django's test database setup wait for the cluster."""


def heal(cluster: LocalCluster) -> None:
    """Undo every fault a test may have injected, and wait until caught up."""
    for node in cluster.nodes:
        cluster.unslow(node)
    cluster.thaw("primary")
    if not cluster.node_running("primary"):
        cluster.start_primary()
    for replica in cluster.replicas:
        name = replica.name
        cluster.thaw(name)
        if not cluster.node_running(name):
            cluster.start_replica(name)
        cluster.set_apply_delay(name, 0)
        cluster.resume_replay(name)
    for replica in cluster.replicas:
        cluster.wait_streaming(replica.name, timeout=60)
    cluster.wait_caught_up(timeout=60)
