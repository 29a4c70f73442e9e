"""
Django's PostgreSQL backend, plus passive failover for replica aliases.

When a connection to a replica cannot be opened, the replica leaves rotation
at once and this connection is opened to the read planner's substitute
(:meth:`~django_rwsplit.planner.ReadPlanner.substitutes`: another replica in
rotation at the scope's read-your-writes position, else the primary) instead,
so the read that needed it still succeeds. Such a substitute connection is
closed again after one ``CHECK_INTERVAL``.

When an autocommit read on a replica fails because its connection broke
(the server died, or the health monitor released it from a hung server), the
replica leaves rotation and the read runs again on a substitute connection.
A read cancelled by a recovery conflict runs again on another replica that
satisfies the scope's read-your-writes position, else on the primary, without
ejecting anything. Both are bounded (:data:`retry.MAX_RETRIES`) and announced
with :data:`~django_rwsplit.signals.read_retried`.

Kept connections (``CONN_MAX_AGE`` > 0) and pooled ones (``OPTIONS["pool"]``)
to a replica that left rotation are not reused, and Django's connection
health check gets a client-side deadline of ``CHECK_TIMEOUT``.

The engine's other parts, one job each: :mod:`.replica_reads` (the replica
connections' execute wrapper: load, release, retries), :mod:`.primary_writes`
(writes that reach a replica alias), :mod:`.primary_switch` and
:mod:`.following` (a primary that moves), :mod:`.pooling` (the pool with
deadlines), :mod:`.membership` (which cluster an alias belongs to).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from django.db import connections
from django.db.utils import InterfaceError
from psycopg import sql as sql_module

from django_rwsplit import planner
from django_rwsplit.backends.postgresql import pools
from django_rwsplit.backends.postgresql.pooling import PooledConnections, pool_busy
from django_rwsplit.backends.postgresql.primary_switch import (
    follow_the_primary,
)
from django_rwsplit.backends.postgresql.primary_writes import send_writes_to_primary
from django_rwsplit.backends.postgresql.replica_reads import retry_elsewhere
from django_rwsplit.backends.postgresql.retry import retry_reason
from django_rwsplit.backends.postgresql.visible_commits import (
    install as install_visible_writes,
)
from django_rwsplit.exceptions import PrimaryUnavailable
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.pgwire import (
    ProbeError,
    ProbeTimeout,
    describe_endpoint,
    fetch_on,
    ping,
)


class DatabaseWrapper(PooledConnections):
    """PostgreSQL wrapper with passive replica failover (see module docstring)."""

    substitute_until: float | None = None
    substitute_for: str | None = None
    # Aliases the next connection must not be opened to (a retry's origin).
    _avoid: frozenset[str] = frozenset()
    # The substitute serves one retried query only (a recovery conflict).
    _borrowed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Outermost first: a write moves to the primary before any retry.
        self.execute_wrappers.extend((send_writes_to_primary, retry_elsewhere))

    # -- retries -------------------------------------------------------------

    def retry_reason(self, cursor: Any, error: BaseException) -> str | None:
        """Return why a failed query may run again elsewhere (None: it may not)."""
        if self.in_atomic_block or getattr(cursor.cursor, "name", None):
            return None
        if not self._is_replica():
            return None
        connection = self.connection
        broken = connection is None or connection.closed or connection.broken
        return retry_reason(error, broken=bool(broken))

    def can_retry(self, cursor: Any) -> bool:
        """Return whether a query whose connection broke may run again."""
        return self.retry_reason(cursor, InterfaceError("probe")) is not None

    def reconnect_for_retry(self, reason: str, error: BaseException) -> None:
        """Reopen this alias's connection where the retry of ``reason`` must run."""
        if reason == "recovery_conflict":
            # The server is healthy; only this query conflicted with replay.
            self._avoid = frozenset({self.alias, self.substitute_for or self.alias})
        elif self.substitute_for is None:
            health_registry.report_unreachable(self.alias, error)
        self.close()
        self.ensure_connection()

    def end_borrowing(self) -> None:
        """After a retried query, let a borrowed server go at the next cursor."""
        if self._borrowed:
            self._borrowed = False
            self.substitute_until = time.monotonic()

    # -- reuse of kept connections -----------------------------------------

    def is_usable(self) -> bool:
        """
        Django's reuse check, bounded for replicas.

        A replica connection is unusable when the replica left rotation, and
        when ``SELECT 1`` does not answer within ``CHECK_TIMEOUT`` (then the
        replica also leaves rotation, as a hung server).
        """
        if not self._is_replica():
            return bool(super().is_usable())
        connection = self.connection
        if connection is None:
            return False
        if self.substitute_for is None and health_registry.out_of_rotation(self.alias):
            return False
        try:
            ping(connection.pgconn, self._settings().check_timeout)
        except ProbeTimeout as error:
            if self.substitute_for is None:
                health_registry.report_unreachable(
                    self.alias, pools.ServerHung(str(error))
                )
            return False
        except ProbeError:
            return False
        return True

    def close_if_unusable_or_obsolete(self) -> None:
        """Also drop a kept connection to a replica that left rotation."""
        super().close_if_unusable_or_obsolete()
        if (
            self.connection is not None
            and self.substitute_for is None
            and self._is_replica()
            and health_registry.out_of_rotation(self.alias)
        ):
            self.close()

    def ensure_connection(self) -> None:
        if self.connected_node is not None and self._left_behind():
            self.close()
        until = self.substitute_until
        if (
            until is not None
            and not self.in_atomic_block
            and (
                time.monotonic() >= until
                or (not self._borrowed and self._back_in_rotation())
            )
        ):
            self.substitute_until = self.substitute_for = None
            self.close()
        super().ensure_connection()

    def _back_in_rotation(self) -> bool:
        """Return whether this replica, served by a substitute, is in rotation again."""
        state = health_registry.for_alias(self.alias)
        return state is not None and state.in_rotation(self.alias)

    # -- opening connections -----------------------------------------------

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not self._is_primary():
            return self._new_connection(conn_params)
        if follow_the_primary not in self.execute_wrappers:
            self.execute_wrappers.append(follow_the_primary)
        # Outermost: a statement retried on the new primary is made visible
        # once, after it ran.
        install_visible_writes(self)
        connection = self._new_connection(conn_params)
        if self._lists_nodes():
            info = connection.info
            self.connected_node = f"{info.host}:{info.port}"
        return connection

    def _new_connection(self, conn_params: dict[str, Any]) -> Any:
        self.substitute_for = self.substitute_until = None
        self.connected_node = None
        avoid, self._avoid = self._avoid, frozenset()
        target = self._avoid_target(avoid) or self._known_out_of_rotation()
        if target is None:
            try:
                connection = super().get_new_connection(conn_params)
                self._set_time_zone_within_deadline(connection)
                return connection
            except psycopg.Error as error:
                if pool_busy(error) and self._is_primary():
                    return self._open_past_the_pool()
                target = self._failover_target(error)
                if target is None:
                    self._raise_if_primary(error)
                    raise
        connection = self._open_substitute(target)
        self.substitute_for = target
        # A retry after a recovery conflict borrows the other server for one
        # query (end_borrowing); a replica that is down is replaced until the
        # next round.
        self._borrowed = bool(avoid)
        self.substitute_until = time.monotonic() + self._settings().check_interval
        return connection

    def _open_past_the_pool(self) -> Any:
        """
        The primary's pool gave nothing in time: connect directly once.

        After an outage psycopg_pool retries its connections with a growing
        backoff (1, 2, 4, 8 s...), so its wait can time out while the primary
        is up again. A direct connection serves this request; the stale pool
        is discarded, and the next request gets a fresh one. If the direct
        connection fails too, the primary is unavailable.
        """
        try:
            connection = self._open_substitute(self.alias)
        except psycopg.Error as direct:
            self._raise_if_primary(direct)
            raise
        pools.discard(self._connection_pools, self.alias)
        return connection

    def _set_time_zone_within_deadline(self, connection: Any) -> None:
        """
        On a replica, set the session time zone now, within ``CHECK_TIMEOUT``.

        Django sets it after connecting with a query that has no deadline; a
        pooler in front of a hung replica (PgBouncer) accepts the connection
        at once and then holds that query for as long as the server hangs.
        Done here, a hang fails over like a connection that cannot be opened,
        and Django's own step finds nothing left to do.
        """
        if getattr(connection, "_pool", None) is not None or not self._is_replica():
            return
        wanted = self.timezone_name
        if not wanted or connection.info.parameter_status("TimeZone") == wanted:
            return
        sql = sql_module.SQL("SELECT set_config('TimeZone', {}, false)").format(
            sql_module.Literal(wanted)
        )
        try:
            fetch_on(
                connection.pgconn,
                sql.as_string(connection),
                self._settings().check_timeout,
            )
        except ProbeError as error:
            connection.close()
            if isinstance(error, ProbeTimeout):
                raise pools.ServerHung(f"unreachable: {error}") from None
            raise psycopg.OperationalError(str(error)) from None

    def _open_substitute(self, target: str) -> Any:
        """Open a direct connection to ``target`` for this alias."""
        params = connections[target].get_connection_params()
        self._bypass_pool = True
        try:
            connection = super().get_new_connection(params)
        finally:
            self._bypass_pool = False
        # init_connection_state leaves configuring to the pool: do it here.
        pooled = self.settings_dict["OPTIONS"].get("pool")
        if pooled and self._configure_connection(connection):
            connection.commit()
        return connection

    def _avoid_target(self, avoid: frozenset[str]) -> str | None:
        if not avoid:
            return None
        return self._substitute(avoid)

    def _raise_if_primary(self, error: BaseException) -> None:
        """Name the primary in the error when it cannot be reached."""
        config = self._cluster()
        primary = config.primary if config is not None else None
        if self.alias == primary:
            endpoint = describe_endpoint(self.settings_dict)
            raise PrimaryUnavailable(
                f"Primary database {primary!r} ({endpoint}) is unreachable: "
                f"{str(error).splitlines()[0][:200]}"
            ) from error

    def _known_out_of_rotation(self) -> str | None:
        """Return a substitute alias if this replica was ejected as unreachable."""
        state = health_registry.for_alias(self.alias)
        if state is None or self.alias not in state.config.replicas:
            return None
        if state.in_rotation(self.alias):
            return None
        if not state.unreachable(self.alias):
            return None
        return self._substitute((self.alias,))

    def _failover_target(self, error: BaseException) -> str | None:
        """Eject this replica (unless its pool was only busy); return where to go."""
        config = self._cluster()
        if config is None or self.alias not in config.replicas:
            return None
        if not pool_busy(error):
            health_registry.report_unreachable(self.alias, error)
        return self._substitute((self.alias,))

    def _substitute(self, exclude: frozenset[str] | tuple[str, ...]) -> str:
        """
        The read planner's substitute for this replica alias (never our choice).

        Before health checks run (nothing routed yet) only the primary is known.
        """
        config = self._settings()
        if health_registry.for_alias(self.alias) is None:
            return config.primary
        return planner.for_config(config).substitute(exclude)


def discard_pool(sender: object, alias: str, **kwargs: Any) -> None:
    """
    Receiver of ``replica_ejected`` and ``primary_changed``: no pooled
    connection outlives rotation, or a primary that moved.

    Connected in ``AppConfig.ready()``.
    """
    pools.discard(DatabaseWrapper._connection_pools, alias)
