"""
Django's PostgreSQL backend, plus passive failover for replica aliases.

When a connection to a replica cannot be opened, the replica leaves rotation
at once and this connection is opened to another replica in rotation or to
the primary instead, so the read that needed it still succeeds. Such a
substitute connection is closed again after one ``CHECK_INTERVAL``.

When a query on a replica fails because its connection broke (the server
died, or the health monitor released it from a hung server) and the
connection was not inside a transaction, the replica leaves rotation and the
query runs once more on a substitute connection. Reads in autocommit are
idempotent, so the retry is safe.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from django.db import connections
from django.db.backends.postgresql import base
from django.db.utils import InterfaceError, OperationalError

from django_rwsplit import conf, inflight, pinning
from django_rwsplit.exceptions import PrimaryUnavailable
from django_rwsplit.health import registry


def retry_elsewhere(
    execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Execute wrapper of replica connections (see the module docstring)."""
    wrapper = context["connection"]
    alias = wrapper.alias
    inflight.enter(alias, wrapper)
    try:
        return execute(sql, params, many, context)
    except (OperationalError, InterfaceError) as error:
        cursor = context["cursor"]
        if not wrapper.can_retry(cursor):
            raise
        if wrapper.substitute_for is None:
            registry.report_unreachable(alias, error)
        wrapper.close()
        wrapper.ensure_connection()
        cursor.cursor = wrapper.create_cursor()
    finally:
        inflight.leave(alias, wrapper)
    return execute(sql, params, many, context)


def substitute_for_read(state: registry.ProcessHealth) -> str:
    """
    Return where a read meant for an unreachable replica should go.

    Another replica in rotation, provided it has replayed the position the
    current scope must read after (read-your-writes), else the primary.
    """
    scope = pinning.current_scope()
    min_lsn = scope.min_lsn if scope is not None else None
    for _ in range(len(state.tracker.rotation.members)):
        alias = state.tracker.rotation.pick()
        if alias is None:
            break
        status = state.tracker.status(alias)
        if not min_lsn or (
            status is not None
            and status.replay_lsn is not None
            and status.replay_lsn >= min_lsn
        ):
            return alias
    return state.config.primary


class DatabaseWrapper(base.DatabaseWrapper):
    """PostgreSQL wrapper with passive replica failover (see module docstring)."""

    substitute_until: float | None = None
    substitute_for: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute_wrappers.append(retry_elsewhere)

    def can_retry(self, cursor: Any) -> bool:
        """Return whether a failed query may run again on another server."""
        connection = self.connection
        broken = connection is None or connection.closed or connection.broken
        named = getattr(cursor.cursor, "name", None)
        return broken and not named and not self.in_atomic_block and self._is_replica()

    def _is_replica(self) -> bool:
        config = conf.config_or_none()
        return config is not None and self.alias in config.replicas

    def ensure_connection(self) -> None:
        until = self.substitute_until
        if (
            until is not None
            and not self.in_atomic_block
            and (time.monotonic() >= until or self._back_in_rotation())
        ):
            self.substitute_until = self.substitute_for = None
            self.close()
        super().ensure_connection()

    def _back_in_rotation(self) -> bool:
        """Return whether this replica, served by a substitute, is in rotation again."""
        state = registry.current()
        return state is not None and self.alias in state.tracker.rotation.members

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self.substitute_for = self.substitute_until = None
        target = self._known_out_of_rotation()
        if target is None:
            try:
                return super().get_new_connection(conn_params)
            except psycopg.Error as error:
                target = self._failover_target(error)
                if target is None:
                    self._raise_if_primary(error)
                    raise
        substitute = connections[target].get_connection_params()
        connection = super().get_new_connection(substitute)
        self.substitute_for = target
        self.substitute_until = time.monotonic() + conf.get_config().check_interval
        return connection

    def _raise_if_primary(self, error: BaseException) -> None:
        """Name the primary in the error when it cannot be reached."""
        config = conf.config_or_none()
        primary = config.primary if config is not None else None
        if self.alias == primary:
            from django_rwsplit.health.pgwire import describe_endpoint

            endpoint = describe_endpoint(self.settings_dict)
            raise PrimaryUnavailable(
                f"Primary database {primary!r} ({endpoint}) is unreachable: "
                f"{str(error).splitlines()[0][:200]}"
            ) from error

    def _known_out_of_rotation(self) -> str | None:
        """Return a substitute alias if this replica was ejected as unreachable."""
        state = registry.current()
        if state is None or self.alias not in state.config.replicas:
            return None
        if self.alias in state.tracker.rotation.members:
            return None
        if not state.tracker.unreachable(self.alias):
            return None
        return substitute_for_read(state)

    def _failover_target(self, error: BaseException) -> str | None:
        """Eject this replica and return the alias to connect to instead."""
        config = conf.config_or_none()
        if (
            config is None
            or self.alias not in config.replicas
            or self.settings_dict["OPTIONS"].get("pool")
        ):
            return None
        registry.report_unreachable(self.alias, error)
        state = registry.current()
        return config.primary if state is None else substitute_for_read(state)
