"""
Cache calls on the request and task paths, each with a deadline.

A cache that is down raises at once; one that hangs (a frozen Redis, a
black-holed network) would stall every caller. Each call here runs within
``CHECK_TIMEOUT``, as the health cache's calls do
(:func:`~django_rwsplit.health.deadline.call_within`), and any failure comes
back as :class:`CacheUnavailable` for the caller to fall back on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.core.cache import BaseCache, caches

from django_rwsplit.health.deadline import call_within

__all__ = ["CacheUnavailable", "bounded_cache_call"]

_T = TypeVar("_T")


class CacheUnavailable(Exception):
    """A cache call failed or did not answer within its deadline."""


def bounded_cache_call(
    alias: str, timeout: float, call: Callable[[BaseCache], _T]
) -> _T:
    """
    Return ``call(caches[alias])`` within ``timeout`` seconds.

    The deadline is per calling thread: concurrent requests never refuse each
    other, and a thread whose earlier call still hangs fails at once.
    """
    key = f"cache:{alias}:{threading.get_ident()}"
    try:
        return call_within(key, timeout, lambda: call(caches[alias]))
    except Exception as error:  # noqa: BLE001 - any cache failure is one thing here
        raise CacheUnavailable(f"cache {alias!r}: {error}") from error
