"""
Django's psycopg pool for cluster aliases, with the product's deadlines.

A replica's pool waits at most its ``connect_timeout`` (``wait_bound``) and
pings within ``CHECK_TIMEOUT``; a pool is made only for an alias that has
one; a substitute connection bypasses the pool; a pooled connection goes
back to the pool it came from. :func:`pool_busy` tells a pool that gave
nothing in time from a dead server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured

from django_rwsplit.backends.postgresql import pools
from django_rwsplit.backends.postgresql.visible_commits import VisibleCommits

__all__ = ["PooledConnections", "pool_busy", "wait_bound"]


class PooledConnections(VisibleCommits):
    """The pool side of the engine (see the module docstring)."""

    # Django's own (not in django-stubs); annotated only, never assigned here.
    _connection_pools: ClassVar[dict[str, Any]]
    _configure_connection: Callable[[Any], bool]
    # While True, ``pool`` is None: a substitute is opened directly.
    _bypass_pool = False

    @property
    def pool(self) -> Any:
        if self._bypass_pool:
            return None
        options = self.settings_dict["OPTIONS"].get("pool")
        if not options or self._cluster() is None:
            return super().pool
        known = self._connection_pools
        if self.alias not in known:
            known.setdefault(self.alias, self._new_bounded_pool(options))
        return known[self.alias]

    def _new_bounded_pool(self, options: Any) -> Any:
        """Build the alias's pool as Django does, with our deadlines (see pools)."""
        if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
            raise ImproperlyConfigured(
                "Pooling doesn't support persistent connections."
            )
        try:
            cls = pools.pool_class()
        except ImportError as err:
            raise ImproperlyConfigured(
                "Error loading psycopg_pool module.\nDid you install psycopg[pool]?"
            ) from err
        config = self._settings()
        kwargs = self.get_connection_params()
        kwargs["autocommit"] = True
        pool = cls(
            kwargs=kwargs,
            open=False,
            configure=self._configure_connection,
            check=None,
            **({} if options is True else options),
        )
        pool.wait_bound = wait_bound(self.settings_dict, config.check_timeout)
        if self.settings_dict["CONN_HEALTH_CHECKS"]:
            pool.ping_timeout = config.check_timeout
        return pool

    def _close(self) -> None:
        # Return a pooled connection to the pool it came from, and close any
        # other (a substitute is direct also when this alias is pooled),
        # without making a pool for an alias that has none now.
        connection = self.connection
        if connection is None:
            return
        with self.wrap_database_errors:
            pool = getattr(connection, "_pool", None)
            if pool is None:
                connection.close()
            else:
                pool.putconn(connection)
                self.connection = None


def pool_busy(error: BaseException) -> bool:
    """
    Return whether ``error`` came from the pool, not from a dead server.

    A wait that timed out, or a pool closed while the request waited in it
    (discarded by another thread: a replica that left rotation, a stale
    primary pool renewed).
    """
    try:
        from psycopg_pool import PoolClosed, PoolTimeout
    except ImportError:
        return False
    return isinstance(error, PoolTimeout | PoolClosed)


def wait_bound(settings_dict: dict[str, Any], check_timeout: float) -> float:
    """Seconds a request may wait for a replica's pool: its connect_timeout."""
    try:
        seconds = float(settings_dict["OPTIONS"].get("connect_timeout"))
    except (TypeError, ValueError):
        seconds = 0.0
    # At least 2 s, libpq's minimum; CHECK_TIMEOUT when unset.
    return max(2.0, seconds if seconds > 0 else check_timeout)
