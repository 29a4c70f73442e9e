"""
The write under way when the primary goes away: a typed error, never replayed.

A statement in flight when the primary shuts down may or may not have been
applied: it raises WriteInterrupted with ``outcome_unknown`` and is not run
again; a transaction the server rolled back says so; a request answers 503.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connections, transaction
from django.test import Client, override_settings

from django_rwsplit.exceptions import PrimaryUnavailable, WriteInterrupted
from tests.testapp.models import Item
from tests.utils import fast_health

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

FAST = fast_health()


def stop_primary_while(cluster: Any, run: Any) -> BaseException | None:
    """Run ``run`` in a thread; stop the primary (fast) once it is under way."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            caught.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    time.sleep(0.5)  # the statement is sleeping on the server
    cluster.stop_primary(mode="fast")
    thread.join(30)
    assert not thread.is_alive()
    cluster.start_primary()  # before the test's database flush
    connections.close_all()
    return caught[0] if caught else None


def backend_pid() -> int:
    """The server process of this thread's primary connection (opened if need be)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return int(pid)


def close_from_the_server(cluster: Any) -> int:
    """Open the primary connection, then have the server end it; its old pid."""
    pid = backend_pid()
    cluster.execute("primary", f"SELECT pg_terminate_backend({pid})")
    return pid


def slow_insert() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO testapp_item (name) SELECT 'slow' FROM pg_sleep(5)")


@override_settings(RWSPLIT=FAST)
def test_a_statement_in_flight_raises_with_its_outcome_unknown(cluster):
    error = stop_primary_while(cluster, slow_insert)
    assert isinstance(error, WriteInterrupted), repr(error)
    assert isinstance(error, PrimaryUnavailable)
    assert error.outcome_unknown
    assert "outcome unknown" in str(error)


@override_settings(RWSPLIT=FAST)
def test_a_transaction_cut_short_says_nothing_was_written(cluster):
    def in_transaction() -> None:
        with transaction.atomic():
            Item.objects.create(name="first")
            slow_insert()

    error = stop_primary_while(cluster, in_transaction)
    assert isinstance(error, WriteInterrupted), repr(error)
    assert not error.outcome_unknown
    assert "rolled it back" in str(error)
    assert not Item.objects.using("default").filter(name="first").exists()


@override_settings(RWSPLIT=FAST)
def test_a_request_whose_write_is_interrupted_answers_503(cluster):
    responses: list[Any] = []

    def request() -> None:
        responses.append(Client().get("/slow-write/?seconds=5"))

    error = stop_primary_while(cluster, request)
    assert error is None, repr(error)
    assert responses[0].status_code == 503
    assert responses[0]["Retry-After"] == "1"


@override_settings(RWSPLIT=FAST)
def test_a_request_with_the_primary_down_answers_503(cluster):
    cluster.stop_primary()
    connections.close_all()
    response = Client().get("/create/")
    cluster.start_primary()
    connections.close_all()
    assert response.status_code == 503


@override_settings(RWSPLIT=FAST)
def test_a_read_on_a_connection_the_server_closed_runs_again(cluster):
    """A read pinned to the primary after a restart: once more, not a 503."""
    pid = close_from_the_server(cluster)
    assert backend_pid() != pid


@override_settings(RWSPLIT=FAST)
def test_a_write_on_a_connection_the_server_closed_is_not_replayed(cluster):
    close_from_the_server(cluster)
    with pytest.raises(WriteInterrupted), connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO testapp_item (name) VALUES ('once')")
    assert not Item.objects.using("default").filter(name="once").exists()


@pytest.mark.parametrize("wait", [0.0, 3.0], ids=["no_wait", "primary_wait"])
def test_a_connection_the_primary_ends_while_it_is_set_up(cluster, monkeypatch, wait):
    """
    The primary ends the connection during Django's set-up (as a shutdown
    does): nothing was written, so a 503 without PRIMARY_WAIT; with it, a
    fresh connection and the write goes through (found by the failover drill).
    """
    kind = type(connections["default"])
    real = kind._configure_connection
    ended: list[int] = []

    def configure(self: Any, connection: Any) -> Any:
        if self.alias == "default" and not ended:
            pid = connection.info.backend_pid
            cluster.execute("primary", f"SELECT pg_terminate_backend({pid}, 5000)")
            ended.append(pid)
            connection.execute("SELECT 1")  # the set-up's next query
        return real(self, connection)

    monkeypatch.setattr(kind, "_configure_connection", configure)
    connections.close_all()
    with override_settings(RWSPLIT=fast_health(PRIMARY_WAIT=wait)):
        if wait:
            Item.objects.using("default").create(name="after the cut")
        else:
            with pytest.raises(PrimaryUnavailable) as caught:
                Item.objects.using("default").create(name="after the cut")
            assert "nothing was written" in str(caught.value)
    assert ended, "the set-up was not cut"
    found = Item.objects.using("default").filter(name="after the cut").exists()
    assert found is bool(wait)
