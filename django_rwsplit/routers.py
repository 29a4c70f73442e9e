"""The database router: writes to the primary, reads to a replica in rotation."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from django_rwsplit import balancing, conf, observe, pinning


class _PrimaryConnection(threading.local):
    """
    The calling thread's primary ``DatabaseWrapper``, remembered per thread.

    ``connections[alias]`` costs about a microsecond (asgiref's ``Local``
    probes for a running event loop on every access); the router asks whether
    the primary is inside ``atomic()`` on every read, so it keeps the wrapper
    Django handed this thread. It is forgotten whenever a routing scope is
    activated (each request, each ``read_after`` block), so a wrapper
    replaced with ``connections[alias] = ...`` is seen by the next request
    at the latest.
    """

    wrapper: BaseDatabaseWrapper | None = None


_primary_connection = _PrimaryConnection()
_pin_depth = pinning.get_pin_depth
_current_scope = pinning.get_scope
_choose_replica = balancing.choose_replica
_unscoped_write = pinning.get_unscoped_write


def forget_primary_connection() -> None:
    """Drop the remembered primary wrapper of the calling thread."""
    _primary_connection.wrapper = None


# Each request (and read_after block) starts from connections[...] again.
pinning.on_activate(forget_primary_connection)


class ReadWriteRouter:
    """
    Route writes to the primary and reads to a healthy replica.

    Reads go to the primary when the context is pinned (by a write, an unsafe
    HTTP method, the pin cookie or :func:`~django_rwsplit.pin_primary`), while
    the primary connection is inside ``atomic()`` (other than the view's own
    ``ATOMIC_REQUESTS`` transaction of a safe request that has not written),
    and when no replica is in rotation. Within a request, reads stay on the
    replica chosen for the first read while it remains in rotation.
    """

    def db_for_read(self, model: type[Any], **hints: Any) -> str:
        # This runs for every read: keep it to attribute reads, no I/O.
        config = conf.cached or conf.get_config()
        primary = config.primary
        reason: str | None
        if not config.replicas:
            alias, reason = primary, "no_replicas"
        elif _pin_depth():
            alias, reason = primary, "pin_primary"
        else:
            scope = _current_scope()
            if scope is not None and scope.pinned is not None:
                alias, reason = primary, scope.pinned
            elif (
                scope is None
                and (wrote_at := _unscoped_write())
                and time.monotonic() - wrote_at < config.sticky_seconds
            ):
                # Outside any scope, a write pins its context for a while.
                alias, reason = primary, "write"
            else:
                wrapper = _primary_connection.wrapper
                if wrapper is None or wrapper.alias != primary:
                    wrapper = _primary_connection.wrapper = connections[primary]
                if wrapper.in_atomic_block and (
                    scope is None
                    or scope.request_atomic_depth != len(wrapper.atomic_blocks)
                ):
                    alias, reason = primary, "transaction"
                else:
                    alias, reason = _choose_replica(config, scope), None
        if observe.listeners:
            observe.read(alias, reason)
        return alias

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        return (conf.cached or conf.get_config()).primary

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        config = conf.config_or_none()
        if config is None:
            return None
        ours = {config.primary, *config.replicas}
        if obj1._state.db in ours and obj2._state.db in ours:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        config = conf.config_or_none()
        if config is not None and db in config.replicas:
            return False
        return None
