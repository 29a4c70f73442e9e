"""Which failed replica reads are retried, and the pool's broken-socket check."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import pq

from django_rwsplit.backends.postgresql.pools import closed_by_server
from django_rwsplit.backends.postgresql.retry import retry_reason


class Failure(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("failed")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "broken", "reason"),
    [
        ("40001", False, "recovery_conflict"),
        ("40P01", False, "recovery_conflict"),
        ("57P01", True, "server_shutdown"),
        ("57P03", False, "server_shutdown"),
        ("08P01", False, "connection_broken"),
        (None, True, "connection_broken"),
        ("42P01", False, None),  # undefined table: the caller's bug
        ("25006", False, None),  # a write on a read-only replica
        (None, False, None),
    ],
)
def test_retry_reason(sqlstate, broken, reason):
    assert retry_reason(Failure(sqlstate), broken=broken) == reason


def test_the_sqlstate_of_the_wrapped_psycopg_error_counts():
    wrapped = RuntimeError("django's wrapper")
    wrapped.__cause__ = Failure("40001")
    assert retry_reason(wrapped, broken=False) == "recovery_conflict"


def test_an_idle_socket_with_something_to_read_was_closed_by_the_server():
    ours, server = socket.socketpair()
    with ours, server:
        pgconn = SimpleNamespace(status=pq.ConnStatus.OK, socket=ours.fileno())
        assert not closed_by_server(pgconn)
        server.sendall(b"E")  # the server's last words
        assert closed_by_server(pgconn)


def test_a_bad_connection_is_closed():
    pgconn = SimpleNamespace(status=pq.ConnStatus.BAD, socket=-1)
    assert closed_by_server(pgconn)
    assert issubclass(psycopg.errors.SerializationFailure, psycopg.OperationalError)
