"""
Django's psycopg pool (``OPTIONS["pool"]``) for replica aliases, with deadlines.

psycopg_pool waits up to its ``timeout`` (30 s by default) for a connection,
and its optional check runs ``SELECT 1``-like traffic with no deadline, so a
hung replica would hold the request. A replica's pool here:

- waits for a connection at most ``wait_bound`` seconds, whatever the pool's
  own ``timeout`` (the replica's ``connect_timeout``, else ``CHECK_TIMEOUT``);
- with ``CONN_HEALTH_CHECKS``, checks the connection it hands out with a
  client-side deadline (``CHECK_TIMEOUT``) instead of the pool's check;
- is discarded when the replica leaves rotation (:func:`discard`): its idle
  connections are closed, connections in use are closed when returned, and
  a new pool (opening ``min_size`` connections) is made only when a read is
  routed to the replica again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from django_rwsplit.health.pgwire import ProbeError, ProbeTimeout, ping

logger = logging.getLogger("django_rwsplit")


class ReplicaHung(psycopg.OperationalError):
    """A kept connection to a replica did not answer within the deadline."""


class ReplicaPool:
    """Mix-in over ``psycopg_pool.ConnectionPool``; see :func:`pool_class`."""

    wait_bound: float = 2.0
    ping_timeout: float | None = None

    def getconn(self, timeout: float | None = None) -> Any:
        bound = self.wait_bound if timeout is None else min(timeout, self.wait_bound)
        connection = super().getconn(bound)  # type: ignore[misc]
        if self.ping_timeout is None:
            return connection
        try:
            ping(connection.pgconn, self.ping_timeout)
        except ProbeError as error:
            connection.close()  # the pool drops a closed connection
            self.putconn(connection)  # type: ignore[attr-defined]
            if isinstance(error, ProbeTimeout):
                raise ReplicaHung(f"unreachable: {error}") from None
            raise psycopg.OperationalError(
                f"pooled connection unusable: {error}"
            ) from None
        return connection


_classes: dict[type, type] = {}


def pool_class() -> type:
    """Return ``psycopg_pool.ConnectionPool`` with :class:`ReplicaPool` mixed in."""
    from psycopg_pool import ConnectionPool

    cls = _classes.get(ConnectionPool)
    if cls is None:
        cls = _classes[ConnectionPool] = type(
            "ReplicaConnectionPool", (ReplicaPool, ConnectionPool), {}
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
