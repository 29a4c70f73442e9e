"""Routing against the real primary and two streaming replicas."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import connections, router, transaction
from django.test import override_settings

from django_rwsplit import pin_primary, pinning
from tests.testapp.models import Item
from tests.utils import server_port

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]


def test_reads_spread_over_replicas_by_weight(cluster, ports):
    """Exact shares are round-robin's; the adaptive balancer follows the load."""
    with override_settings(
        RWSPLIT={
            "REPLICAS": {"replica1": {"WEIGHT": 3}, "replica2": {"WEIGHT": 1}},
            "ROUTE_TEST_MIRRORS_TO_PRIMARY": False,
            "BALANCER": "round_robin",
        }
    ):
        counts = Counter(server_port(router.db_for_read(Item)) for _ in range(1000))
    assert counts[ports["default"]] == 0
    assert abs(counts[ports["replica1"]] - 750) <= 75
    assert abs(counts[ports["replica2"]] - 250) <= 25


def test_writes_land_on_primary_and_replicate(cluster, ports):
    item = Item.objects.create(name="written")
    assert router.db_for_write(Item) == "default"
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM testapp_item WHERE id = %s", [item.pk])
        assert cursor.fetchone()[0] == 1
    cluster.wait_caught_up()
    assert Item.objects.filter(pk=item.pk).exists()
    assert item._state.db == "default"


def test_reads_inside_atomic_go_to_primary(cluster, ports):
    with transaction.atomic():
        Item.objects.create(name="in-tx")
        assert server_port(router.db_for_read(Item)) == ports["default"]
        assert Item.objects.filter(name="in-tx").count() == 1
    # After the commit, the write still pins this (unscoped) context a while.
    assert router.db_for_read(Item) == "default"
    pinning.forget_unscoped_write()
    assert router.db_for_read(Item) in ("replica1", "replica2")


def test_read_only_atomic_reads_primary(cluster, ports):
    with transaction.atomic():
        assert router.db_for_read(Item) == "default"


def test_select_for_update_runs_on_primary(cluster, ports):
    item = Item.objects.create(name="lock-me")
    with transaction.atomic():
        locked = Item.objects.select_for_update().get(pk=item.pk)
        assert locked._state.db == "default"
    assert Item.objects.select_for_update().db == "default"


def test_paused_replica_misses_rows_that_routed_reads_would_see(cluster, ports):
    """The replicas really are replicas: a paused one does not see a new row."""
    cluster.pause_replay("replica1")
    item = Item.objects.create(name="unseen")
    cluster.wait_caught_up("replica2")
    assert not Item.objects.using("replica1").filter(pk=item.pk).exists()
    assert Item.objects.using("replica2").filter(pk=item.pk).exists()
    with pin_primary():
        assert Item.objects.filter(pk=item.pk).exists()


def test_migrations_only_on_primary():
    assert router.allow_migrate("replica1", "testapp") is False
    assert router.allow_migrate("replica2", "testapp") is False
    assert router.allow_migrate("default", "testapp") is True


def test_relations_between_primary_and_replica_objects_allowed(cluster):
    a = Item.objects.create(name="a")
    cluster.wait_caught_up()
    b = Item.objects.using("replica1").get(pk=a.pk)
    assert router.allow_relation(a, b) is True


def test_no_replicas_means_everything_on_primary(cluster, ports):
    with override_settings(RWSPLIT={}):
        assert server_port(router.db_for_read(Item)) == ports["default"]
