"""
Replica queries in flight, so that a hung replica's queries can be released.

A frozen server never answers, and ``statement_timeout`` cannot fire on it.
When the health monitor finds a replica hung (its probe timed out), the
sockets of queries still waiting on it are shut down, so those queries fail
at once and :mod:`django_rwsplit.backends.postgresql` retries them elsewhere.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

logger = logging.getLogger("django_rwsplit")

_waiting: dict[str, set[Any]] = {}


def enter(alias: str, wrapper: Any) -> None:
    """Note that ``wrapper`` (a DatabaseWrapper) is waiting on a query."""
    _waiting.setdefault(alias, set()).add(wrapper)


def leave(alias: str, wrapper: Any) -> None:
    """Note that ``wrapper``'s query returned."""
    _waiting.get(alias, set()).discard(wrapper)


def release(alias: str) -> int:
    """Shut down the sockets of queries waiting on ``alias``; return how many."""
    released = 0
    for wrapper in list(_waiting.get(alias, ())):
        if getattr(wrapper, "substitute_for", None):
            continue
        connection = wrapper.connection
        try:
            fd = connection.pgconn.socket
            with socket.socket(fileno=socket.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
            released += 1
        except Exception:  # noqa: BLE001 - the query may have just finished
            continue
    if released:
        logger.warning("Released %d query(ies) hung on replica %r.", released, alias)
    return released
