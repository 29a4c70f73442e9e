"""Releasing queries on a hung replica (health.release): real sockets, no server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from django_rwsplit.health import release


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
