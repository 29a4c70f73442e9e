"""Releasing queries on a hung replica (health.release): real sockets, no server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from django_rwsplit.health import release
from tests.utils import wait_until


@pytest.fixture
def two_servers() -> Iterator[tuple[socket.socket, socket.socket]]:
    listeners = []
    for _ in range(2):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listeners.append(listener)
    yield listeners[0], listeners[1]
    for listener in listeners:
        listener.close()


class Waiting:
    """A DatabaseWrapper stand-in whose query waits on ``client``'s socket."""

    substitute_for = None

    def __init__(self, client: socket.socket) -> None:
        self.connection = SimpleNamespace(
            pgconn=SimpleNamespace(socket=client.fileno())
        )


def waiting_on(alias: str, client: socket.socket) -> Waiting:
    wrapper = Waiting(client)
    release.enter(alias, wrapper)
    return wrapper


def test_a_reused_descriptor_of_another_server_is_not_shut(two_servers):
    """The query's descriptor now belongs to a connection elsewhere: left alone."""
    replica, elsewhere = two_servers
    client = socket.create_connection(elsewhere.getsockname())
    wrapper = waiting_on("replica-x", client)
    try:
        host, port = replica.getsockname()
        assert release.release("replica-x", {"HOST": host, "PORT": port}) == 0
        client.sendall(b"still open")  # raises if it was shut down
    finally:
        release.leave("replica-x", wrapper)
        client.close()


def test_a_query_waiting_on_the_hung_replica_is_released(two_servers):
    replica, _ = two_servers
    client = socket.create_connection(replica.getsockname())
    wrapper = waiting_on("replica-y", client)
    try:
        host, port = replica.getsockname()
        assert release.release("replica-y", {"HOST": host, "PORT": port}) >= 1
        with pytest.raises(OSError):
            client.sendall(b"shut down")
    finally:
        release.leave("replica-y", wrapper)
        client.close()


def test_a_query_younger_than_the_timeout_is_released_only_once_it_has_waited(
    two_servers,
):
    """The check timed out, but this query began just now: not at once, later."""
    replica, _ = two_servers
    client = socket.create_connection(replica.getsockname())
    idle = socket.create_connection(replica.getsockname())  # a kept connection
    wrapper = waiting_on("replica-z", client)
    try:
        host, port = replica.getsockname()
        released = release.release(
            "replica-z", {"HOST": host, "PORT": port}, waited=0.3
        )
        assert released == 1  # the idle connection only, at once
        with pytest.raises(OSError):
            idle.sendall(b"shut down")
        client.sendall(b"still open")  # the young query is spared for now
        wait_until(lambda: shut_down(client), timeout=5)
    finally:
        release.leave("replica-z", wrapper)
        client.close()
        idle.close()


def test_a_young_query_is_spared_when_the_replica_answers_again(two_servers):
    replica, _ = two_servers
    client = socket.create_connection(replica.getsockname())
    wrapper = waiting_on("replica-w", client)
    asked = threading.Event()

    def answered_again() -> bool:
        asked.set()
        return False

    try:
        host, port = replica.getsockname()
        release.release(
            "replica-w",
            {"HOST": host, "PORT": port},
            waited=0.1,
            still_hung=answered_again,
        )
        assert asked.wait(5), "the timer never looked again"
        for timer in threading.enumerate():
            if timer.name == "rwsplit-release-replica-w":
                timer.join(5)
        client.sendall(b"still open")
    finally:
        release.leave("replica-w", wrapper)
        client.close()


def shut_down(client: socket.socket) -> bool:
    try:
        client.sendall(b"x")
    except OSError:
        return True
    return False
