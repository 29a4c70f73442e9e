"""Fixtures of the two-cluster project: both local clusters, healed after each test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from django_rwsplit import pinning, process_state
from django_rwsplit.testing.cluster import LocalCluster

pytest_plugins = ["django_rwsplit.testing.fixtures"]


@pytest.fixture(scope="session")
def second_cluster() -> LocalCluster:
    """The analytics cluster the outer suite started (RWSPLIT_SECOND_CLUSTER_DIR)."""
    return LocalCluster(os.environ["RWSPLIT_SECOND_CLUSTER_DIR"])


@pytest.fixture(scope="session")
def django_db_setup(
    django_db_setup: None, rwsplit_cluster: LocalCluster, second_cluster: LocalCluster
) -> None:
    """Let every replica replay the freshly created test databases."""
    rwsplit_cluster.wait_caught_up(timeout=60)
    second_cluster.wait_caught_up(timeout=60)


@pytest.fixture
def clusters(
    rwsplit_cluster: LocalCluster, second_cluster: LocalCluster
) -> Iterator[tuple[LocalCluster, LocalCluster]]:
    """(default cluster, analytics cluster), healed of faults after the test."""
    # Imported here: at module level it would precede the plugin's own
    # import (pytest_plugins) and escape pytest's assertion rewriting.
    from django_rwsplit.testing.fixtures import heal

    for cluster in (rwsplit_cluster, second_cluster):
        cluster.wait_caught_up(timeout=60)
    yield rwsplit_cluster, second_cluster
    for cluster in (rwsplit_cluster, second_cluster):
        heal(cluster)
    process_state.reset()


@pytest.fixture(autouse=True)
def _fresh_health() -> Iterator[None]:
    pinning.forget_unscoped_write()
    process_state.reset()
    yield
    process_state.reset()
