"""
pytest fixtures that run tests against the local primary + replicas.

Enable with ``pytest_plugins = ["django_rwsplit.testing.fixtures"]``. The
cluster starts once per session on ``RWSPLIT_CLUSTER_PORT`` (default 15432)
and its replicas, or is reused when ``RWSPLIT_CLUSTER_DIR`` names a running
one (``python -m django_rwsplit.testing up``).
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
