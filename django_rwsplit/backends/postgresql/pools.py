"""
Django's psycopg pool (``OPTIONS["pool"]``) with deadlines, for our aliases.

psycopg_pool waits up to its ``timeout`` (30 s by default) for a connection,
and its optional check has no deadline, so a hung or dead server would hold
the request. The pools of the primary and of each replica here:

- wait for a connection at most ``wait_bound`` seconds, whatever the pool's
  own ``timeout`` (the alias's ``connect_timeout``, at least 2 s);
- never hand out an idle connection the server has closed (a restart, an
  administrator's termination): a local, non-blocking look at the socket,
  no round trip;
- with ``CONN_HEALTH_CHECKS``, check the connection they hand out with
  ``SELECT 1`` and a client-side deadline (``CHECK_TIMEOUT``) instead of
  the pool's own check.

A replica's pool is discarded when the replica leaves rotation
(:func:`discard`): its idle connections are closed, connections in use are
closed when returned, and a new pool (opening ``min_size`` connections) is
made only when a read is routed to the replica again.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

import psycopg
from psycopg import pq

from django_rwsplit.health.pgwire import ProbeError, ProbeTimeout, ping

logger = logging.getLogger("django_rwsplit")


class ServerHung(psycopg.OperationalError):
    """A kept connection did not answer within the deadline (a hung server)."""


def closed_by_server(pgconn: Any) -> bool:
    """
    Return whether an idle connection was closed by its server.

    An idle connection has nothing to read: if its socket is readable, the
    server sent its last words (a FATAL error, EOF), and libpq may not have
    noticed yet. Such a connection is treated as closed: at worst a
    notification nobody listens for costs a new connection. Costs one
    ``select`` with no wait.
    """
    if pgconn.status != pq.ConnStatus.OK:
        return True
    try:
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class BoundedPool:
    """Mix-in over ``psycopg_pool.ConnectionPool``; see :func:`pool_class`."""

    wait_bound: float = 2.0
    ping_timeout: float | None = None

    def getconn(self, timeout: float | None = None) -> Any:
        bound = self.wait_bound if timeout is None else min(timeout, self.wait_bound)
        deadline = time.monotonic() + bound
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            connection = super().getconn(left)  # type: ignore[misc]
            if closed_by_server(connection.pgconn):
                self._drop(connection)
                continue
            if self.ping_timeout is None:
                return connection
            try:
                ping(connection.pgconn, min(self.ping_timeout, left))
            except ProbeTimeout as error:
                self._drop(connection)
                raise ServerHung(f"unreachable: {error}") from None
            except ProbeError:
                self._drop(connection)
                continue
            return connection

    def _drop(self, connection: Any) -> None:
        """Close ``connection`` and give it back: the pool replaces it."""
        connection.close()
        self.putconn(connection)  # type: ignore[attr-defined]


_classes: dict[type, type] = {}


def pool_class() -> type:
    """Return ``psycopg_pool.ConnectionPool`` with :class:`BoundedPool` mixed in."""
    from psycopg_pool import ConnectionPool

    cls = _classes.get(ConnectionPool)
    if cls is None:
        cls = _classes[ConnectionPool] = type(
            "BoundedConnectionPool", (BoundedPool, ConnectionPool), {}
        )
    return cls


def discard(pools: dict[str, Any], alias: str) -> None:
    """
    Forget ``alias``'s pool and close it in the background.

    Closing does not wait on the server (idle connections are finished
    locally); connections checked out now are closed when returned.
    """
    pool = pools.pop(alias, None)
    if pool is None:
        return

    def close() -> None:
        try:
            pool.close(timeout=5.0)
        except Exception:  # noqa: BLE001 - a pool that fails to close is gone anyway
            logger.debug("Closing the pool of %r failed.", alias, exc_info=True)

    try:
        threading.Thread(target=close, name="rwsplit-pool-close", daemon=True).start()
    except RuntimeError:  # interpreter shutting down: no new threads
        close()
