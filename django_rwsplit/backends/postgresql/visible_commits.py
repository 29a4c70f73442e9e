"""
The engine's side of ``visible_on_replicas()``: each commit made in the block waits.

A write on a cluster's primary inside the block marks its connection: an
autocommit statement has committed when it returns, so the wait runs at
once; a transaction waits at its COMMIT, wherever that is (inside or around
the block). Replicas that the primary reports as synchronous standbys (in
``sync`` state) are waited for by PostgreSQL itself: the transaction commits
with ``synchronous_commit = remote_apply``, cancelled client-side (libpq's
cancel) if ``VISIBLE_WAIT`` passes. Every other replica in rotation is asked
its replay position until it has the commit's
(:func:`django_rwsplit.health.replay_wait.wait_replayed`). A replica that
has not applied it by then is held out of this process's rotation until it
has (:meth:`ProcessHealth.hold_until_replayed`), reported, and the commit
returns after one more ``CHECK_INTERVAL`` + ``CHECK_TIMEOUT``, in which
every other process's health round judges the replica's lag.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from django_rwsplit import conf, signals, sql_classify, visibility
from django_rwsplit.backends.postgresql.following import FollowsThePrimary
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.probes import format_lsn, parse_lsn
from django_rwsplit.health.replay_wait import Waited, wait_replayed

__all__ = ["VisibleCommits", "visible_writes"]

logger = logging.getLogger("django_rwsplit")


def visible_writes(
    execute: Callable[..., Any],
    sql: object,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """Execute wrapper of a primary: a write inside the block waits at its commit."""
    result = execute(sql, params, many, context)
    wrapper = context["connection"]
    config = wrapper._cluster()
    if (
        config is not None
        and visibility.wanted(config.name)
        and (not isinstance(sql, str) or sql_classify.is_write(sql))
    ):
        if wrapper.in_atomic_block or not wrapper.get_autocommit():
            wrapper.visible_pending = True
        else:
            wrapper.make_visible(config, synchronous=frozenset())
    return result


class VisibleCommits(FollowsThePrimary):
    """A primary's commits made inside ``visible_on_replicas()`` wait for replicas."""

    # A transaction of this connection wrote inside the block.
    visible_pending = False

    def _commit(self) -> None:
        config = self._cluster() if self.visible_pending else None
        self.visible_pending = False
        if config is None or self.connection is None:
            super()._commit()
            return
        started = time.monotonic()
        synchronous = self._synchronous_replicas(config)
        cancelled = False
        if synchronous:
            with self.connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = remote_apply")
            cancelled = self._commit_within(config.visible_wait)
        else:
            super()._commit()
        # A cancelled remote_apply wait proves nothing: ask those replicas too.
        self.make_visible(
            config, synchronous=() if cancelled else synchronous, started=started
        )

    def _rollback(self) -> None:
        self.visible_pending = False
        super()._rollback()  # type: ignore[misc]

    def _commit_within(self, seconds: float) -> bool:
        """
        COMMIT, its wait for synchronous standbys cancelled after ``seconds``.

        Returns whether the wait was cancelled (the transaction is committed
        on the primary either way: PostgreSQL only stops waiting).
        """
        connection = self.connection
        done = threading.Event()
        cancelled = threading.Event()

        def cancel() -> None:
            if not done.wait(seconds):
                cancelled.set()
                try:
                    connection.cancel_safe(timeout=2.0)
                except Exception:  # noqa: BLE001 - the wait is bounded anyway
                    logger.debug(
                        "Cancelling a remote_apply wait failed.", exc_info=True
                    )

        timer = threading.Thread(target=cancel, name="rwsplit-visible", daemon=True)
        timer.start()
        try:
            super()._commit()
        finally:
            done.set()
        return cancelled.is_set()

    def _synchronous_replicas(self, config: conf.Config) -> frozenset[str]:
        """Replicas in rotation the primary reports as synchronous (remote_apply)."""
        state = health_registry.process_health(config)
        primary = state.primary
        if primary is None or not primary.sync_standbys:
            return frozenset()
        names = set(primary.sync_standbys)
        return frozenset(
            alias
            for alias in state.rotation.members
            if (found := state.status(alias)) is not None
            and found.standby_name in names
        )

    def make_visible(
        self,
        config: conf.Config,
        *,
        synchronous: Collection[str],
        started: float | None = None,
    ) -> None:
        """Wait until every replica in rotation applied this connection's commit."""
        started = time.monotonic() if started is None else started
        state = health_registry.process_health(config)
        rotating = set(state.rotation.members)
        others = sorted(rotating - set(synchronous))
        resting = [alias for alias in config.replicas if alias not in rotating]
        if not others and not resting:
            return
        lsn = self._position()
        if lsn is None:
            return
        for alias in resting:  # out of rotation now: not readmitted before it
            state.hold_until_replayed(alias, lsn)
        if not others:
            return
        waited = wait_replayed(
            lsn,
            others,
            {alias: self._settings_of(alias) for alias in others},
            deadline=started + config.visible_wait,
            check_timeout=config.check_timeout,
        )
        if waited.missing:
            self._not_visible(config, state, waited, started)

    def _not_visible(
        self, config: conf.Config, state: Any, waited: Waited, started: float
    ) -> None:
        """The wait ran out: hold the laggards out, report, let every process see."""
        missing, lsn = list(waited.missing), waited.lsn
        for alias in missing:
            state.hold_until_replayed(alias, lsn)
        several = len(missing) > 1
        logger.warning(
            "A commit made in visible_on_replicas() at %s was not applied by %s "
            "within VISIBLE_WAIT (%.1f s): the write stands; %s no read until %s "
            "applied it.",
            format_lsn(lsn),
            ", ".join(missing),
            config.visible_wait,
            "they serve" if several else "it serves",
            "they have" if several else "it has",
        )
        signals.send_robust(
            signals.visibility_timed_out,
            sender=type(self),
            cluster=config.name,
            replicas=tuple(missing),
            lsn=lsn,
            waited=time.monotonic() - started,
        )
        # Every other process's next round judges the replica (lag) meanwhile.
        extra = config.check_interval + config.check_timeout
        wait_replayed(
            lsn,
            missing,
            {alias: self._settings_of(alias) for alias in missing},
            deadline=time.monotonic() + extra,
            check_timeout=config.check_timeout,
        )

    def _position(self) -> int | None:
        """The primary's WAL position after the commit (None: not read)."""
        connection = self.connection
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_current_wal_lsn()::text")
                row = cursor.fetchone()
            if not connection.autocommit:
                connection.rollback()  # after a COMMIT: end the query's own
        except Exception:  # noqa: BLE001 - the write stands; nothing to wait for
            logger.warning("visible_on_replicas(): the commit's position was not read.")
            return None
        return parse_lsn(row[0]) if row else None

    def _settings_of(self, alias: str) -> dict[str, Any]:
        from django.db import connections

        return dict(connections.settings[alias])
