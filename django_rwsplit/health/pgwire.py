"""One-shot PostgreSQL queries with a hard, client-side deadline.

libpq's ``connect_timeout`` has whole-second granularity (minimum 2 s), and a
server that is frozen (SIGSTOP, hung VM) accepts the TCP handshake through the
kernel backlog but never answers, so ``statement_timeout`` cannot help either.
This module drives libpq's non-blocking API (``psycopg.pq``) and waits on the
socket itself, so connect + query together never outlive ``timeout``.

libpq resolves host names with a blocking ``getaddrinfo``; so a host name
is resolved here first, within the same deadline (in a daemon thread, see
:mod:`~django_rwsplit.health.deadline`), and handed to libpq as ``hostaddr``
(``host`` stays, for TLS verification and ``.pgpass``).
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq.abc import PGconn

from django_rwsplit.health.deadline import CallTimeout, call_within

__all__ = [
    "APPLICATION_NAME",
    "ProbeConnectionError",
    "ProbeError",
    "ProbeTimeout",
    "conninfo_from_settings",
    "describe_endpoint",
    "fetch_on",
    "fetch_row",
    "ping",
]

APPLICATION_NAME = "django_rwsplit_health"
DEFAULT_PORT = 5432
_MAX_MESSAGE = 200
# Keys that must not reach libpq: the deadline is ours, the name is fixed.
_EXCLUDED_OPTIONS = frozenset({"connect_timeout", "application_name"})


class ProbeError(Exception):
    """Base class for probe failures raised by :func:`fetch_row`."""


class ProbeTimeout(ProbeError):
    """The deadline passed before the server answered."""

    def __init__(self, phase: str, elapsed_ms: float) -> None:
        self.phase = phase
        self.elapsed_ms = elapsed_ms
        super().__init__(f"{phase} timed out after {elapsed_ms:.0f} ms")


class ProbeConnectionError(ProbeError):
    """Connecting or querying failed; the message never contains credentials."""


@cache
def _libpq_keywords() -> frozenset[str]:
    return frozenset(d.keyword.decode() for d in pq.Conninfo.get_defaults())


def conninfo_from_settings(settings_dict: Mapping[str, Any]) -> str:
    """Build a libpq conninfo string from a Django ``DATABASES`` entry.

    Only ``OPTIONS`` that libpq understands are kept (``sslmode``, ``passfile``,
    ``service``...); ``connect_timeout`` is dropped because the caller enforces
    its own deadline.
    """
    options: Mapping[str, Any] = settings_dict.get("OPTIONS") or {}
    keywords = _libpq_keywords()
    params: dict[str, Any] = {
        key: value
        for key, value in options.items()
        if key in keywords and key not in _EXCLUDED_OPTIONS and value is not None
    }
    name = settings_dict.get("NAME")
    if name:
        params["dbname"] = name
    elif name is None and "service" not in params:
        params["dbname"] = "postgres"
    for setting, key in (
        ("USER", "user"),
        ("PASSWORD", "password"),
        ("HOST", "host"),
        ("PORT", "port"),
    ):
        if value := settings_dict.get(setting):
            params[key] = str(value)
    params["client_encoding"] = "UTF8"
    params["application_name"] = APPLICATION_NAME
    return make_conninfo("", **params)


def describe_endpoint(settings_dict: Mapping[str, Any]) -> str:
    """Return ``host:port`` for display; never includes credentials."""
    options: Mapping[str, Any] = settings_dict.get("OPTIONS") or {}
    host = str(
        settings_dict.get("HOST")
        or options.get("host")
        or options.get("hostaddr")
        or ""
    )
    port = str(settings_dict.get("PORT") or options.get("port") or DEFAULT_PORT)
    if not host:
        host = "[local]"
    elif ":" in host and "," not in host and not host.startswith("/"):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{port}"


def _clean(message: bytes | str | None, password: str | None) -> str:
    """First line of a libpq/server message, trimmed and scrubbed."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    lines = (message or "").strip().splitlines()
    text = lines[0].strip() if lines else ""
    if password:
        text = text.replace(password, "***")
    return text[:_MAX_MESSAGE] or "unknown error"


class _Deadline:
    def __init__(self, timeout: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + timeout

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.start) * 1000.0

    def wait(self, fd: int, events: int, phase: str) -> int:
        """Block until ``fd`` is ready for ``events``; raise at the deadline."""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, events)
            while True:
                remaining = self.end - time.monotonic()
                if remaining <= 0:
                    raise ProbeTimeout(phase, self.elapsed_ms())
                ready = selector.select(remaining)
                if ready:
                    return ready[0][1]


def _connect(pgconn: PGconn, deadline: _Deadline, password: str | None) -> None:
    if pgconn.status == pq.ConnStatus.BAD:
        raise ProbeConnectionError(_clean(pgconn.error_message, password))
    # libpq: behave as if connect_poll had just returned WRITING.
    status: int = pq.PollingStatus.WRITING
    while status != pq.PollingStatus.OK:
        if status == pq.PollingStatus.FAILED:
            raise ProbeConnectionError(_clean(pgconn.error_message, password))
        if status in (pq.PollingStatus.READING, pq.PollingStatus.WRITING):
            events = (
                selectors.EVENT_READ
                if status == pq.PollingStatus.READING
                else selectors.EVENT_WRITE
            )
            # The socket can change between polls (SSL retry, multiple hosts).
            deadline.wait(pgconn.socket, events, "connect")
        status = pgconn.connect_poll()


def _query(
    pgconn: PGconn, sql: str, deadline: _Deadline, password: str | None
) -> tuple[str | None, ...]:
    pgconn.nonblocking = 1
    pgconn.send_query(sql.encode())
    while pgconn.flush() == 1:
        ready = deadline.wait(
            pgconn.socket, selectors.EVENT_READ | selectors.EVENT_WRITE, "query"
        )
        if ready & selectors.EVENT_READ:
            pgconn.consume_input()

    row: tuple[str | None, ...] | None = None
    error: str | None = None
    while True:
        pgconn.consume_input()
        while pgconn.is_busy():
            deadline.wait(pgconn.socket, selectors.EVENT_READ, "query")
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        if result.status == pq.ExecStatus.TUPLES_OK:
            if row is None and result.ntuples:
                row = tuple(
                    None
                    if (v := result.get_value(0, col)) is None
                    else v.decode("utf-8", "replace")
                    for col in range(result.nfields)
                )
        elif result.status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE):
            primary = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
            error = error or _clean(primary or result.error_message, password)
    if error is not None:
        raise ProbeConnectionError(error)
    if row is None:
        raise ProbeConnectionError("query returned no rows")
    return row


def fetch_row(
    conninfo: str, sql: str, timeout: float, *, timing: list[float] | None = None
) -> tuple[str | None, ...]:
    """Connect, run ``sql`` and return its first row as text (``None`` = NULL).

    ``timeout`` (seconds) bounds connect and query together. Raises
    :class:`ProbeTimeout` when it passes and :class:`ProbeConnectionError` on
    any other failure. The connection is always closed. With ``timing``, a
    ``SELECT 1`` follows, and its round trip (on a warm session, without
    connecting) is appended to it in seconds: a figure comparable with an
    application query's.
    """
    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        raise ProbeConnectionError("invalid connection string") from None
    password = params.get("password")
    secret = str(password) if password else None
    deadline = _Deadline(timeout)
    conninfo = resolved(conninfo, params, deadline)
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    try:
        _connect(pgconn, deadline, secret)
        row = _query(pgconn, sql, deadline, secret)
        if timing is not None:
            # A second, trivial round trip on the now warm backend: the first
            # query of a new session also loads its caches.
            started = time.perf_counter()
            _query(pgconn, "SELECT 1", deadline, secret)
            timing.append(time.perf_counter() - started)
        return row
    except psycopg.Error as exc:  # raised by the pq wrapper on I/O failures
        message = pgconn.error_message or str(exc)
        raise ProbeConnectionError(_clean(message, secret)) from None
    finally:
        pgconn.finish()


def _needs_lookup(host: str) -> bool:
    if not host or host.startswith("/") or host.startswith("@"):
        return False  # a Unix socket directory (or abstract socket)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def _lookup(host: str, port: str | None) -> str:
    infos = socket.getaddrinfo(host, port or DEFAULT_PORT, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


def resolved(conninfo: str, params: dict[str, Any], deadline: _Deadline) -> str:
    """
    Return ``conninfo`` (parsed: ``params``) with its host name resolved in time.

    The address goes in ``hostaddr``. Only a single host without ``hostaddr``
    is resolved; a list of hosts is left to libpq. Raises
    :class:`ProbeTimeout` when the lookup outlives the deadline and
    :class:`ProbeConnectionError` when it fails.
    """
    host = str(params.get("host") or "")
    if params.get("hostaddr") or "," in host or not _needs_lookup(host):
        return conninfo
    port = params.get("port")
    remaining = deadline.end - time.monotonic()
    try:
        address = call_within(
            f"resolve:{host}",
            max(0.0, remaining),
            lambda: _lookup(host, str(port) if port else None),
        )
    except CallTimeout:
        raise ProbeTimeout("host name lookup", deadline.elapsed_ms()) from None
    except OSError as exc:
        raise ProbeConnectionError(
            f"could not translate host name {host!r}: {exc.strerror or exc}"
        ) from None
    return make_conninfo("", **{**params, "hostaddr": address})


def fetch_on(pgconn: PGconn, sql: str, timeout: float) -> tuple[str | None, ...]:
    """
    Run ``sql`` on an open, idle connection within ``timeout``; return its row.

    Raises :class:`ProbeTimeout` at the deadline (the connection is then
    unusable: close it) and :class:`ProbeConnectionError` on any failure.
    """
    if pgconn.status != pq.ConnStatus.OK:
        raise ProbeConnectionError("connection is closed")
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise ProbeConnectionError("connection is not idle")
    try:
        return _query(pgconn, sql, _Deadline(timeout), None)
    except psycopg.Error as exc:  # I/O failure on a broken socket
        message = _clean(pgconn.error_message or str(exc), None)
        raise ProbeConnectionError(message) from None


def ping(pgconn: PGconn, timeout: float) -> None:
    """
    Run ``SELECT 1`` on an open connection, within ``timeout`` seconds.

    For reusing a kept connection (Django's ``CONN_HEALTH_CHECKS``, a pool's
    check) without waiting on a hung server. Raises :class:`ProbeTimeout` at
    the deadline, leaving the connection unusable (close it), and
    :class:`ProbeConnectionError` when the connection is broken.
    """
    fetch_on(pgconn, "SELECT 1", timeout)
