"""Pin a request, and the client's next requests, to the primary after a write."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.db import connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from django_rwsplit import consistency, observe, pinning, user_pins
from django_rwsplit.conf import Config, get_config
from django_rwsplit.exceptions import PrimaryUnavailable
from django_rwsplit.pin_reasons import PinReason
from django_rwsplit.streaming import keep_scope_while_streaming

logger = logging.getLogger("django_rwsplit")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class PinPrimaryMiddleware:
    """
    Route a request's reads to the primary once it wrote, and remember it.

    Each request gets its own routing scope (a context variable, reset when
    the request ends, also when the view raised). A request that wrote leaves
    a signed cookie: in ``"lsn"`` consistency it carries the primary's WAL
    position after the request, and the client's next requests read from
    replicas that have replayed it; in ``"time"`` consistency it pins them to
    the primary for ``STICKY_SECONDS``. The same token goes in the
    ``RESPONSE_TOKEN_HEADER`` response header, and a client without cookies
    may send it back in the ``REQUEST_TOKEN_HEADER`` request header.

    A streamed response's body is made in the request's scope too
    (:mod:`django_rwsplit.streaming`); a write made while it streams pins
    the rest of the body, but no cookie can follow the headers already sent.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(
        self, request: HttpRequest
    ) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        config = get_config()
        scope = open_scope(request, config)
        token = pinning.activate(scope)
        try:
            response = self.get_response(request)
            assert isinstance(response, HttpResponseBase)
            remember_write(request, response, scope, config)
            keep_scope_while_streaming(response, scope)
        finally:
            pinning.deactivate(token)
        return response

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        """
        A write the primary cannot take now answers 503, never 500.

        :class:`~django_rwsplit.exceptions.PrimaryUnavailable` (the primary
        is down, read-only or moving; a write interrupted by a failover) is a
        temporary condition: the client may retry after ``Retry-After``.
        """
        if not isinstance(exception, PrimaryUnavailable):
            return None
        logger.warning("Answering 503: %s", exception)
        response = HttpResponse(
            "503 Service Unavailable: the primary database cannot take writes "
            "right now; retry shortly.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = "1"
        return response

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: Any,
        view_kwargs: Any,
    ) -> None:
        """Note the view's ``ATOMIC_REQUESTS`` transaction, if it has one."""
        scope = pinning.current_scope()
        if scope is not None:
            expect_atomic_view(request, view_func, scope, get_config())

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        config = get_config()
        scope = open_scope(request, config)
        token = pinning.activate(scope)
        try:
            response = await self.get_response(request)  # type: ignore [misc]
            if scope.wrote:
                await sync_to_async(remember_write)(request, response, scope, config)
            keep_scope_while_streaming(response, scope)
        finally:
            pinning.deactivate(token)
        return response  # type: ignore [no-any-return]


def open_scope(request: HttpRequest, config: Config) -> pinning.Scope:
    """Return the routing scope a new request starts with."""
    scope = pinning.Scope()
    if config.pin_unsafe_methods and request.method not in SAFE_METHODS:
        scope.pin_everywhere(PinReason.UNSAFE_METHOD)
    token = client_token(request, config)
    if token is not None:
        consistency.apply(token, scope, config)
    if config.user_pin_cache is not None:
        # Authentication may happen in the view (REST frameworks): look the
        # user's pin up when the request first reads, not now.
        scope.before_first_read = user_pins.lookup_for(request, config)
    if scope.pinned is not None:
        observe.pin(scope.pinned)
    return scope


def client_token(request: HttpRequest, config: Config) -> consistency.Token | None:
    """
    Return the pin the client sent: the cookie, else the request header.

    Either is ignored when forged, expired, oversized or garbage. With both
    valid, each cluster reads after the later position of the two (a time
    pin of a cluster wins over a position).
    """
    found = [
        consistency.decode(request.COOKIES.get(config.cookie_name), config),
    ]
    if config.request_token_header:
        found.append(
            consistency.decode(request.headers.get(config.request_token_header), config)
        )
    return consistency.merge([token for token in found if token is not None])


def expect_atomic_view(
    request: HttpRequest,
    view_func: Callable[..., Any],
    scope: pinning.Scope,
    config: Config,
) -> None:
    """
    Let a safe request's view read from replicas inside ``ATOMIC_REQUESTS``.

    Django runs the view inside ``atomic()`` on each database with
    ``ATOMIC_REQUESTS`` (unless the view is ``non_atomic_requests``). The
    scope remembers how deep that block sits on the primary, so that reads
    in it (and only in it, not in the view's own ``atomic()`` blocks) go to
    replicas until the request writes. The view's writes stay in the
    transaction, all-or-nothing.
    """
    if not config.replica_reads_in_atomic_requests:
        return
    if request.method not in SAFE_METHODS:
        return
    for cluster in config.every_cluster():
        primary = cluster.primary
        if not cluster.replicas:
            continue
        if not connections.settings[primary].get("ATOMIC_REQUESTS"):
            continue
        if primary in getattr(view_func, "_non_atomic_requests", ()):
            continue
        depth = len(connections[primary].atomic_blocks) + 1
        scope.of(cluster.name).request_atomic_depth = depth


def remember_write(
    request: HttpRequest,
    response: HttpResponseBase,
    scope: pinning.Scope,
    config: Config,
) -> None:
    """Give a client that wrote the cookie that pins its next requests."""
    if not scope.wrote or config.sticky_seconds <= 0:
        return
    written = [
        c.name for c in config.every_cluster() if c.name in scope.written and c.replicas
    ]
    if not written:
        return
    value = consistency.written_token(written, config)
    if config.user_pin_cache is not None:
        user_pins.remember(request, value, config)
    if config.response_token_header:
        # For clients that keep no cookies: send it back in the request header.
        response[config.response_token_header] = value
    response.set_cookie(
        config.cookie_name,
        value,
        max_age=max(1, math.ceil(config.sticky_seconds)),
        path="/",
        secure=request.is_secure(),
        httponly=True,
        samesite="Lax",
    )
