"""
Writes through ORM read paths reach the primary, never a replica (issue 22).

``QuerySet.raw()`` and every ``SELECT`` are reads to Django's router, however
much they write. On the real cluster, with both replicas in rotation, each
such query runs on the primary, pins the rest of the request, and never
turns into a 500; a write the classifier cannot see, refused by the replica
as read-only, runs once more on the primary (logged with its origin, sent
as ``read_retried``), except inside a transaction on the replica.
"""

from __future__ import annotations

import logging

import psycopg
import pytest
from django.db import InternalError, connections, transaction
from django.test import Client

from django_rwsplit import signals
from tests.testapp.models import Item
from tests.utils import start_health

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

CASES = [
    "raw_insert",
    "raw_delete",
    "raw_for_update",
    "nextval",
    "setval",
    "advisory_lock",
    "notify",
    "unseen_write",
]
INSERT_FUNCTION = """
CREATE OR REPLACE FUNCTION rwsplit_test_insert(label text) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO testapp_item (name, version) VALUES (label, 0) RETURNING id
$$
"""


def primary_dsn_from(cluster) -> str:
    name = connections["default"].settings_dict["NAME"]
    return f"host=127.0.0.1 port={cluster.primary.port} user=postgres dbname={name}"


@pytest.fixture
def replicas_serving(cluster):
    """Both replicas in rotation, the insert function replayed on them."""
    with connections["default"].cursor() as cursor:
        cursor.execute(INSERT_FUNCTION)
    cluster.wait_caught_up(timeout=60)
    start_health()
    yield
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock_all()")


@pytest.fixture
def retried():
    seen: list[dict[str, object]] = []

    def receiver(sender, **kwargs):
        seen.append(kwargs)

    signals.read_retried.connect(receiver, weak=False)
    yield seen
    signals.read_retried.disconnect(receiver)


@pytest.mark.parametrize("case", CASES)
def test_a_hidden_write_runs_on_the_primary_and_pins(
    case, replicas_serving, retried, ports, cluster
):
    Item.objects.create(name="hidden")
    cluster.wait_caught_up(timeout=60)
    response = Client().get(f"/hidden-write/{case}/", {"name": "hidden"})
    assert response.status_code == 200, response.content[:2000]
    body = response.json()
    # The router sent it to a replica: the engine moved it.
    assert body["routed"] in ("replica1", "replica2")
    assert body["result"], body
    # It counted as a write: the rest of the request reads from the primary.
    assert body["after"] == "default"
    assert body["port"] == ports["default"]
    expected_retries = 1 if case == "unseen_write" else 0
    assert [r["reason"] for r in retried] == ["read_only"] * expected_retries


def test_raw_insert_reaches_the_primary(replicas_serving, cluster):
    response = Client().get("/hidden-write/raw_insert/", {"name": "raw-row"})
    assert response.status_code == 200
    (pk,) = response.json()["result"]
    with psycopg.connect(primary_dsn_from(cluster)) as conn:
        row = conn.execute("SELECT name FROM testapp_item WHERE id = %s", [pk])
        assert row.fetchone() == ("raw-row",)


def test_an_advisory_lock_is_taken_on_the_primary(replicas_serving, cluster):
    """A standby grants advisory locks too: there they exclude no one."""
    Item.objects.create(name="locker")
    cluster.wait_caught_up(timeout=60)
    response = Client().get("/hidden-write/advisory_lock/", {"name": "locker"})
    assert response.status_code == 200
    with psycopg.connect(primary_dsn_from(cluster), autocommit=True) as other:
        (got,) = other.execute("SELECT pg_try_advisory_lock(4242)").fetchone()
    assert got is False, "the lock was not held on the primary"


def test_a_notification_reaches_listeners_on_the_primary(replicas_serving, cluster):
    Item.objects.create(name="notifier")
    cluster.wait_caught_up(timeout=60)
    with psycopg.connect(primary_dsn_from(cluster), autocommit=True) as listener:
        listener.execute("LISTEN rwsplit_test")
        response = Client().get("/hidden-write/notify/", {"name": "notifier"})
        assert response.status_code == 200
        received = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.payload for n in received] == ["hello"]


def test_a_refused_write_is_logged_with_its_origin(replicas_serving, caplog):
    with caplog.at_level(logging.WARNING, logger="django_rwsplit"):
        rows = list(
            Item.objects.using("replica1").raw(
                "SELECT rwsplit_test_insert(%s) AS id, 'x' AS name, 0 AS version",
                ["logged"],
            )
        )
    assert len(rows) == 1
    assert Item.objects.using("default").filter(name="logged").count() == 1
    (message,) = [r.getMessage() for r in caplog.records if "25006" in r.getMessage()]
    assert "replica1" in message
    assert f"{__file__}:" in message
    assert "test_a_refused_write_is_logged_with_its_origin" in message


def test_a_write_in_a_replica_transaction_is_not_moved(replicas_serving, retried):
    """Inside atomic() on a replica the transaction lives there: no retry."""
    with (
        pytest.raises(InternalError, match="read-only transaction"),
        transaction.atomic(using="replica1"),
    ):
        list(
            Item.objects.using("replica1").raw(
                "INSERT INTO testapp_item (name, version) VALUES ('tx', 0) "
                "RETURNING id, name, version"
            )
        )
    assert retried == []
    assert not Item.objects.using("default").filter(name="tx").exists()


def test_a_failing_retry_receiver_does_not_fail_the_read(replicas_serving):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver broke")

    signals.read_retried.connect(broken, weak=False)
    try:
        rows = list(
            Item.objects.using("replica2").raw(
                "SELECT rwsplit_test_insert(%s) AS id, 'x' AS name, 0 AS version",
                ["robust"],
            )
        )
    finally:
        signals.read_retried.disconnect(broken)
    assert len(rows) == 1


def test_a_refused_write_is_counted_in_metrics(replicas_serving):
    prometheus_client = pytest.importorskip("prometheus_client")
    from django_rwsplit import metrics

    registry = prometheus_client.CollectorRegistry()
    metrics.install(registry)
    try:
        list(
            Item.objects.using("replica1").raw(
                "SELECT rwsplit_test_insert(%s) AS id, 'x' AS name, 0 AS version",
                ["counted"],
            )
        )
        labels = {"alias": "replica1", "reason": "read_only"}
        counted = registry.get_sample_value("rwsplit_read_retries_total", labels)
    finally:
        metrics.uninstall()
    assert counted == 1.0
