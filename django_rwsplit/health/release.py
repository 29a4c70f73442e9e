"""
Connections to a hung replica, released so that the requests waiting on them move on.

A frozen server never answers, and ``statement_timeout`` cannot fire on it.
When the health monitor finds a replica hung (its check got no answer within
``CHECK_TIMEOUT``, connect and query together), this module shuts down, in
this process:

- the socket of each query registered as waiting on that alias (the replica
  backend's execute wrapper registers each query with its start time), once
  that query has itself waited ``CHECK_TIMEOUT`` and while the replica is
  still found hung. A query that returns sooner, or whose replica answers
  the next check, is never touched: a slow query is not a hung one.
- every other TCP socket whose peer is the replica's address, at once:
  connections
  being opened to it (a connect waits up to ``connect_timeout``, 2 s at
  least, which no deadline of ours can shorten), and kept or pooled
  connections to it. Read from ``/proc/self/fd`` (Linux); elsewhere only
  the registered queries are released.

The waiting calls then fail at once, and
:mod:`django_rwsplit.backends.postgresql` retries the read or opens the
connection elsewhere.

Each released query is also cancelled through libpq (its cancel request,
sent from a daemon thread for up to :data:`CANCEL_WITHIN` seconds; libpq 17
or later), so that the server stops running it: at once on a server that was
only slow, when it wakes on one that was frozen. Shutting the socket down is
what frees the client: a frozen server cannot read a cancel request.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

logger = logging.getLogger("django_rwsplit")

# alias -> {waiting DatabaseWrapper: when its query began (perf_counter)}
_waiting: dict[str, dict[Any, float]] = {}
_FD_DIR = "/proc/self/fd"
DEFAULT_PORT = 5432
# How long a cancel request keeps trying to reach a server that does not answer.
CANCEL_WITHIN = 30.0
# Socket inodes of cancel requests in flight (never released themselves).
_cancelling: set[int] = set()


def enter(alias: str, wrapper: Any, started: float | None = None) -> None:
    """Note that ``wrapper`` (a DatabaseWrapper) waits on a query begun ``started``."""
    when = time.perf_counter() if started is None else started
    _waiting.setdefault(alias, {})[wrapper] = when


def leave(alias: str, wrapper: Any) -> None:
    """Note that ``wrapper``'s query returned."""
    _waiting.get(alias, {}).pop(wrapper, None)


def _always() -> bool:
    return True


def release(
    alias: str,
    settings_dict: Mapping[str, Any] | None = None,
    *,
    waited: float = 0.0,
    still_hung: Callable[[], bool] = _always,
) -> int:
    """
    Shut down this process's connections to hung replica ``alias``.

    A registered query is released once it has waited ``waited`` seconds (a
    timer releases the younger ones later, if ``still_hung()`` then). With
    ``settings_dict`` (the alias's DATABASES entry), every other socket
    connected to its address is shut down at once. Returns how many now.
    """
    shut: set[int] = set()  # socket inodes, so none is counted twice
    spared: set[int] = set()  # sockets of queries too young to release yet
    youngest_due: float | None = None
    cancels: list[Any] = []
    addresses = peer_addresses(settings_dict) if settings_dict is not None else None
    now = time.perf_counter()
    for wrapper, started in _waiting.get(alias, {}).copy().items():
        if getattr(wrapper, "substitute_for", None):
            continue
        due = started + waited
        try:
            fd = wrapper.connection.pgconn.socket
            if due > now:
                spared.add(os.fstat(fd).st_ino)
                youngest_due = due if youngest_due is None else min(youngest_due, due)
                continue
            # Prepared before the shutdown: the waiting thread may close the
            # connection as soon as its socket is shut.
            cancel = _cancel_for(wrapper.connection.pgconn)
            inode = _shut(fd, addresses)
            if inode is not None and cancel is not None:
                cancels.append(cancel)
        except Exception:  # noqa: BLE001 - the query may have just finished
            continue
        if inode is not None:
            shut.add(inode)
    released = len(shut)
    if settings_dict is not None:
        released += release_peer(settings_dict, skip=shut | spared | _cancelling)
    # After the peer scan, which would shut their sockets down too.
    for cancel in cancels:
        _send_cancel(cancel, alias)
    if released:
        logger.warning("Released %d connection(s) to hung replica %r.", released, alias)
    if youngest_due is not None:
        _release_later(youngest_due - now, alias, settings_dict, waited, still_hung)
    return released


def _release_later(
    delay: float,
    alias: str,
    settings_dict: Mapping[str, Any] | None,
    waited: float,
    still_hung: Callable[[], bool],
) -> None:
    """Release ``alias``'s queries again after ``delay`` s, if it is still hung."""

    def again() -> None:
        if still_hung():
            release(alias, settings_dict, waited=waited, still_hung=still_hung)

    timer = threading.Timer(max(delay, 0.0), again)
    timer.name = f"rwsplit-release-{alias}"
    timer.daemon = True
    timer.start()


def _cancel_for(pgconn: Any) -> Any:
    """
    Prepare libpq's cancel request for ``pgconn``'s query (None if unavailable).

    Needs libpq 17 (``PQcancelCreate``, non-blocking). Nothing is sent yet;
    the caller sends it only if the query's socket was shut down.
    """
    try:
        return pgconn.cancel_conn()
    except Exception:  # noqa: BLE001 - older libpq, or the connection is gone
        return None


def _send_cancel(cancel: Any, alias: str) -> None:
    """
    Send ``cancel`` from a daemon thread, for up to :data:`CANCEL_WITHIN` s.

    Its socket is kept out of later releases (:data:`_cancelling`): a request
    pending on a frozen server reaches it when it wakes.
    """
    try:
        cancel.start()
        inode = os.fstat(cancel.socket).st_ino
    except Exception:  # noqa: BLE001 - could not even start: nothing to do
        cancel.finish()
        return
    _cancelling.add(inode)

    def drive() -> None:
        from psycopg.pq import PollingStatus

        deadline = time.monotonic() + CANCEL_WITHIN
        # As libpq's connection polling: wait first as if poll said WRITING.
        status = PollingStatus.WRITING
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wanted = selectors.EVENT_READ
                if status == PollingStatus.WRITING:
                    wanted = selectors.EVENT_WRITE
                with selectors.DefaultSelector() as selector:
                    selector.register(cancel.socket, wanted)
                    if not selector.select(min(left, 1.0)):
                        continue
                status = cancel.poll()
                if status in (PollingStatus.OK, PollingStatus.FAILED):
                    return
        except Exception:  # noqa: BLE001 - best effort: the socket is shut anyway
            logger.debug("Cancel request to %r failed.", alias, exc_info=True)
        finally:
            _cancelling.discard(inode)
            cancel.finish()

    thread = threading.Thread(target=drive, name=f"rwsplit-cancel-{alias}", daemon=True)
    thread.start()


def release_peer(settings_dict: Mapping[str, Any], skip: Collection[int] = ()) -> int:
    """
    Shut down every TCP socket of this process whose peer is this server.

    ``skip`` holds the inodes of sockets already shut down.
    """
    addresses = peer_addresses(settings_dict)
    if not addresses:
        return 0
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return 0
    released = 0
    for name in names:
        try:
            fd = int(name)
            info = os.fstat(fd)
            if not stat.S_ISSOCK(info.st_mode) or info.st_ino in skip:
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.type != socket.SOCK_STREAM:
                    continue
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                host, port = sock.getpeername()[:2]
                if (host, port) in addresses:
                    sock.shutdown(socket.SHUT_RDWR)
                    released += 1
        except (OSError, ValueError):  # closed meanwhile, not connected...
            continue
    return released


def peer_addresses(settings_dict: Mapping[str, Any]) -> frozenset[tuple[str, int]]:
    """Return the (IP, port) pairs a DATABASES entry connects to (none: a socket)."""
    host = str(settings_dict.get("HOST") or "")
    try:
        port = int(settings_dict.get("PORT") or DEFAULT_PORT)
    except (TypeError, ValueError):
        return frozenset()
    if not host or host.startswith("/") or "," in host:
        return frozenset()
    return frozenset((ip, port) for ip in _addresses_of(host))


@functools.cache
def _addresses_of(host: str) -> tuple[str, ...]:
    """The IP addresses of ``host`` (resolved once per process)."""
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return ()
    return tuple(sorted({str(info[4][0]) for info in infos}))


def _shut(fd: int, addresses: Collection[tuple[str, int]] | None) -> int | None:
    """
    Shut down the socket of ``fd`` if it still talks to ``addresses``; its inode.

    The query may have finished and its descriptor number been reused by
    another connection since it was read: with the replica's addresses known,
    a socket whose peer is elsewhere is left alone (None).
    """
    inode = os.fstat(fd).st_ino
    with socket.socket(fileno=socket.dup(fd)) as sock:
        inet = sock.family in (socket.AF_INET, socket.AF_INET6)
        if addresses and inet and tuple(sock.getpeername()[:2]) not in addresses:
            return None
        sock.shutdown(socket.SHUT_RDWR)
    return inode
