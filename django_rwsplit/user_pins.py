"""
Per-user read-your-writes: the position of an authenticated user's last write,
kept in a cache under the user's id (``RWSPLIT["USER_PIN_CACHE"]``).

A request of that user, from any client (a second device, a service that keeps
no cookies), reads after it for ``STICKY_SECONDS``. The lookup runs at the
request's first read once a user is authenticated (REST frameworks
authenticate in the view): one cache read per request of an authenticated
user. A cache that fails, hangs past ``CHECK_TIMEOUT`` or answers garbage
changes nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from django_rwsplit import consistency, pinning
from django_rwsplit.cache_calls import CacheUnavailable, bounded_cache_call
from django_rwsplit.conf import Config

logger = logging.getLogger("django_rwsplit")

PREFIX = "rwsplit:user-pin:v1:"


def user_key(request: HttpRequest) -> str | None:
    """Return the cache key of the request's authenticated user (None: anonymous)."""
    user: Any = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return f"{PREFIX}{user.pk}"


def remember(request: HttpRequest, token: str, config: Config) -> None:
    """Store ``token`` as the request's user's last write."""
    key = user_key(request)
    if key is None or config.user_pin_cache is None:
        return
    timeout = max(1, math.ceil(config.sticky_seconds))
    try:
        bounded_cache_call(
            config.user_pin_cache,
            config.check_timeout,
            lambda cache: cache.set(key, token, timeout=timeout),
        )
    except CacheUnavailable as error:  # a failing cache must not fail the request
        logger.warning("Could not store the user's pin in the cache: %s", error)


def lookup_for(request: HttpRequest, config: Config) -> Callable[[pinning.Scope], bool]:
    """
    Return the hook that applies the user's pin to the request's scope.

    It answers False while no user is authenticated (the reads of the
    authentication itself come first), so it runs again at the next read,
    and True once it looked the user up.
    """

    def lookup(scope: pinning.Scope) -> bool:
        key = user_key(request)
        if key is None or config.user_pin_cache is None:
            return False
        try:
            value = bounded_cache_call(
                config.user_pin_cache, config.check_timeout, lambda c: c.get(key)
            )
        except CacheUnavailable as error:  # as if there were no pin
            logger.warning("Could not read the user's pin from the cache: %s", error)
            return True
        token = consistency.decode(value, config)
        if token is not None:
            consistency.apply(token, scope, config)
        return True

    return lookup
