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

Every query's latency and the queries in flight are measured per server
(:mod:`django_rwsplit.load`) for the adaptive balancer.

Kept connections (``CONN_MAX_AGE`` > 0) and pooled ones (``OPTIONS["pool"]``)
to a replica that left rotation are not reused, and Django's connection
health check gets a client-side deadline of ``CHECK_TIMEOUT``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.postgresql import base
from django.db.utils import InterfaceError, OperationalError
from psycopg import sql as sql_module

from django_rwsplit import conf, observe, planner, signals
from django_rwsplit.backends.postgresql import pools
from django_rwsplit.backends.postgresql.primary_switch import (
    follow_the_primary,
    switch_error,
)
from django_rwsplit.backends.postgresql.primary_writes import send_writes_to_primary
from django_rwsplit.backends.postgresql.retry import MAX_RETRIES, retry_reason
from django_rwsplit.exceptions import PrimaryUnavailable, WriteInterrupted
from django_rwsplit.health import load, nodes, release
from django_rwsplit.health import state as health_state
from django_rwsplit.health.pgwire import (
    ProbeError,
    ProbeTimeout,
    describe_endpoint,
    fetch_on,
    ping,
)


def retry_elsewhere(
    execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Execute wrapper of replica connections (see the module docstring)."""
    wrapper = context["connection"]
    alias = wrapper.alias
    cursor = context["cursor"]
    attempt = 0
    while True:
        server = load.of(wrapper.substitute_for or alias)
        started = server.begin(wrapper)
        release.enter(alias, wrapper, started)
        ok = False
        try:
            result = execute(sql, params, many, context)
            ok = True
        except (OperationalError, InterfaceError) as error:
            wrapper.end_borrowing()
            reason = wrapper.retry_reason(cursor, error)
            if reason is None or attempt >= MAX_RETRIES:
                raise
            attempt += 1
            wrapper.reconnect_for_retry(reason, error)
            cursor.cursor = wrapper.create_cursor()
            signals.send_robust(
                signals.read_retried,
                sender=DatabaseWrapper,
                alias=alias,
                reason=reason,
                attempt=attempt,
            )
        else:
            served_by = wrapper.substitute_for
            wrapper.end_borrowing()
            if served_by is not None and observe.listeners:
                observe.served_by(alias, served_by)
            return result
        finally:
            release.leave(alias, wrapper)
            server.end(wrapper, started, ok)


class DatabaseWrapper(base.DatabaseWrapper):
    """PostgreSQL wrapper with passive replica failover (see module docstring)."""

    substitute_until: float | None = None
    substitute_for: str | None = None
    # Django's own (not in django-stubs); annotated only, never assigned here.
    _connection_pools: ClassVar[dict[str, Any]]
    _configure_connection: Callable[[Any], bool]
    # Aliases the next connection must not be opened to (a retry's origin).
    _avoid: frozenset[str] = frozenset()
    # The substitute serves one retried query only (a recovery conflict).
    _borrowed = False
    # While True, ``pool`` is None: a substitute is opened directly.
    _bypass_pool = False
    # A primary alias listing several nodes (health.nodes): the node
    # (``host:port``) this connection reached; None otherwise.
    connected_node: str | None = None
    # Set when the primary went away: the next connection asks the nodes.
    _fresh_role_check = False

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
            health_state.report_unreachable(self.alias, error)
        self.close()
        self.ensure_connection()

    def end_borrowing(self) -> None:
        """After a retried query, let a borrowed server go at the next cursor."""
        if self._borrowed:
            self._borrowed = False
            self.substitute_until = time.monotonic()

    def _cluster(self) -> conf.Config | None:
        """The cluster (of a valid RWSPLIT) this alias is a primary or replica of."""
        return conf.cluster_of(self.alias)

    def _settings(self) -> conf.Config:
        """This alias's cluster, else the setting (for its timeouts)."""
        return self._cluster() or conf.get_config()

    def _is_replica(self) -> bool:
        config = self._cluster()
        return config is not None and self.alias in config.replicas

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
        if self.substitute_for is None and health_state.out_of_rotation(self.alias):
            return False
        try:
            ping(connection.pgconn, self._settings().check_timeout)
        except ProbeTimeout as error:
            if self.substitute_for is None:
                health_state.report_unreachable(
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
            and health_state.out_of_rotation(self.alias)
        ):
            self.close()

    # -- a primary that moves (multi-host primary alias) ----------------------

    def _lists_nodes(self) -> bool:
        return "," in str(self.settings_dict.get("HOST") or "")

    def _write_node(self) -> str | None:
        """
        The node writes go to, for a primary alias that lists several.

        The health rounds' choice; before the first round, a role check made
        now (bounded by ``CHECK_TIMEOUT``), never libpq's first writable
        host, which may be an old primary on an older timeline.
        """
        if not self._lists_nodes() or not self._is_primary():
            return None
        fresh, self._fresh_role_check = self._fresh_role_check, False
        state = health_state.for_alias(self.alias)
        if not fresh and state is not None and state.primary_node is not None:
            return state.primary_node
        if fresh:
            nodes.forget_found(self.alias)
        config = self._settings()
        return nodes.find_write_node(
            self.alias, self.settings_dict, config.check_timeout, config.check_interval
        )

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        node = self._write_node()
        if node is not None:
            host, _, port = node.rpartition(":")
            params["host"], params["port"] = host, port
        return params

    def _left_behind(self) -> bool:
        """Whether this primary connection is to a node writes no longer go to."""
        node = self.connected_node
        if node is None or self.connection is None or self.in_atomic_block:
            return False
        state = health_state.for_alias(self.alias)
        known = state.primary_node if state is not None else None
        return known is not None and known != node

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
        state = health_state.for_alias(self.alias)
        return state is not None and state.in_rotation(self.alias)

    # -- pools ---------------------------------------------------------------

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

    # -- opening connections -----------------------------------------------

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not self._is_primary():
            return self._new_connection(conn_params)
        if follow_the_primary not in self.execute_wrappers:
            self.execute_wrappers.append(follow_the_primary)
        connection = self._connect_to_primary(conn_params)
        if self._lists_nodes():
            info = connection.info
            self.connected_node = f"{info.host}:{info.port}"
        return connection

    def _connect_to_primary(self, conn_params: dict[str, Any]) -> Any:
        """
        Connect for writes; a connect that failed is tried again on a fresh role check.

        Once at once when the alias lists several nodes (the primary may have
        just moved), then until ``PRIMARY_WAIT`` seconds have passed, if set.
        """
        deadline = time.monotonic() + self._settings().primary_wait
        attempt = 0 if self._lists_nodes() else 1
        while True:
            try:
                return self._new_connection(conn_params)
            except PrimaryUnavailable:
                attempt += 1
                if attempt > 1 and time.monotonic() >= deadline:
                    raise
                if attempt > 1:
                    time.sleep(0.05)
                self.leave_node()
                conn_params = self.get_connection_params()

    def is_cluster_primary(self) -> bool:
        """Whether this alias is a cluster's primary (it takes the writes)."""
        return self._is_primary()

    def leave_node(self) -> None:
        """Drop this primary connection; the next one asks the nodes afresh."""
        self.close()
        self._fresh_role_check = True

    def primary_wait(self) -> float:
        """``PRIMARY_WAIT``: how long a write may wait for a writable node."""
        return self._settings().primary_wait

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]
        except (OperationalError, InterfaceError) as error:
            kind = switch_error(error, self.connection)
            if kind is None or not self._is_primary():
                raise
            self.leave_node()
            raise WriteInterrupted(
                f"The primary went away during COMMIT ({kind}); the transaction "
                "may or may not have been committed (outcome unknown): check "
                "before repeating it.",
                outcome_unknown=True,
            ) from error

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
                if _pool_busy(error) and self._is_primary():
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

    def _is_primary(self) -> bool:
        config = self._cluster()
        return config is not None and self.alias == config.primary

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
        state = health_state.for_alias(self.alias)
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
        if not _pool_busy(error):
            health_state.report_unreachable(self.alias, error)
        return self._substitute((self.alias,))

    def _substitute(self, exclude: frozenset[str] | tuple[str, ...]) -> str:
        """
        The read planner's substitute for this replica alias (never our choice).

        Before health checks run (nothing routed yet) only the primary is known.
        """
        config = self._settings()
        if health_state.for_alias(self.alias) is None:
            return config.primary
        return planner.for_config(config).substitute(exclude)


def _pool_busy(error: BaseException) -> bool:
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


def discard_pool(sender: object, alias: str, **kwargs: Any) -> None:
    """
    Receiver of ``replica_ejected`` and ``primary_changed``: no pooled
    connection outlives rotation, or a primary that moved.

    Connected in ``AppConfig.ready()``.
    """
    pools.discard(DatabaseWrapper._connection_pools, alias)
