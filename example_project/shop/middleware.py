"""
Two small middlewares of the demo.

QueryLogMiddleware records every SQL statement a request runs: on which
database alias and on which server (the host:port the connection really
talks to, which differs from the alias's settings when the replica backend
failed over). Pages show the log as a table; ``/api/`` views summarise it.

DatabaseUnavailableMiddleware turns "cannot reach the database" into a 503.

Both work under WSGI and ASGI (with async views, the log is a context
variable that the ORM's worker thread shares with the request's task).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.html import escape

from django_rwsplit.writes import is_write


@dataclass
class Query:
    """One statement of the request, and where it ran."""

    alias: str
    host: str
    port: int | None
    sql: str
    ms: float
    write: bool
    node: str | None = None  # the DATABASES alias whose server this is
    failed_over_to: str | None = None  # the replica backend's substitute alias

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"


def node_of(host: str, port: int | None) -> str | None:
    """The alias whose settings point at ``host:port`` ("default": the primary)."""
    by_port = None
    for alias, settings_dict in connections.settings.items():
        if str(settings_dict.get("PORT")) == str(port):
            if settings_dict.get("HOST") == host:
                return alias
            by_port = by_port or alias
    return by_port


_log: ContextVar[list[Query] | None] = ContextVar("shop_query_log", default=None)


def current_queries() -> list[Query]:
    """The statements the current request has run so far (a live list)."""
    log = _log.get()
    return log if log is not None else []


def record_query(
    execute: Callable[..., Any],
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """Execute wrapper (installed once on each connection): log the statement."""
    log = _log.get()
    if log is None:  # not inside a request (management command, thread...)
        return execute(sql, params, many, context)
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        wrapper = context["connection"]
        try:
            info = wrapper.connection.info
            host, port = info.host, info.port
        except Exception:  # noqa: BLE001 - no connection, or it was closed
            host, port = "?", None
        log.append(
            Query(
                alias=wrapper.alias,
                host=host,
                port=port,
                node=node_of(host, port),
                sql=sql,
                ms=(time.perf_counter() - started) * 1000,
                write=is_write(sql),
                failed_over_to=getattr(wrapper, "substitute_for", None),
            )
        )


def install_query_log(
    sender: object, connection: BaseDatabaseWrapper, **kwargs: Any
) -> None:
    """``connection_created`` receiver: add :func:`record_query` once.

    Connections are per thread (and, under ASGI, the ORM of an async view runs
    in a worker thread), so the wrapper is installed on each new connection,
    outermost: it sees the server that finally answered, after any failover.
    (Installed for good rather than with the execute_wrapper() context
    manager, whose exit pops the *last* wrapper of the list.)
    """
    if record_query not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, record_query)


class QueryLogMiddleware:
    """Log each request's statements (see :func:`current_queries`)."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponse]
        | Callable[[HttpRequest], Awaitable[HttpResponse]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        token = _log.set([])
        try:
            response: HttpResponse = self.get_response(request)  # type: ignore [assignment]
        finally:
            _log.reset(token)
        # Which worker answered (the demo and the tests read it).
        response["X-Worker-Pid"] = str(os.getpid())
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        token = _log.set([])
        try:
            response: HttpResponse = await self.get_response(request)  # type: ignore [misc]
        finally:
            _log.reset(token)
        response["X-Worker-Pid"] = str(os.getpid())
        return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Answer 503 Service Unavailable when the database cannot be reached."""

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        detail = str(exception).strip().splitlines()[0] if str(exception) else ""
        message = "The database is unavailable right now; please try again."
        if request.path.startswith("/api/") or "json" in request.headers.get(
            "Accept", ""
        ):
            response: HttpResponse = JsonResponse(
                {"error": "database_unavailable", "message": message, "detail": detail},
                status=503,
            )
        else:
            response = HttpResponse(
                "<!doctype html><title>503 Database unavailable</title>"
                "<h1>Database unavailable</h1>"
                f"<p>{escape(message)}</p><pre>{escape(detail)}</pre>"
                '<p><a href="/">Back to the shop</a></p>',
                status=503,
            )
        response["Retry-After"] = "5"
        return response
