"""
The engine's side of ``visible_on_replicas()``: each commit made in the block waits.

A write on a cluster's primary inside the block makes its commit wait: an
autocommit statement has committed when it returns, so the wait runs at
once; a transaction waits at its COMMIT, wherever that is (inside or around
the block). With this project's engine on the primary alias, replicas that
the primary reports as synchronous standbys (``sync`` state) are waited for
by PostgreSQL itself: the transaction commits with ``synchronous_commit =
remote_apply``, cancelled client-side (libpq's cancel) once ``VISIBLE_WAIT``
has passed. With Django's own engine there, the wait runs in an
``on_commit`` callback. Every other replica in rotation is asked its replay
position until it has the commit's
(:func:`django_rwsplit.health.replay_wait.wait_replayed`). A replica that
has not applied it by then is held out of this process's rotation until it
has (``ProcessHealth.hold_until_replayed``), reported, and the commit
returns after one more ``CHECK_INTERVAL`` + ``CHECK_TIMEOUT``, in which
every other process's health round judges that replica's lag.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from django_rwsplit import conf, signals, sql_classify, visibility
from django_rwsplit.backends.postgresql.following import FollowsThePrimary
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.probes import format_lsn, parse_lsn
from django_rwsplit.health.replay_wait import Waited, wait_replayed

__all__ = ["VisibleCommits", "install", "make_visible", "visible_writes"]

logger = logging.getLogger("django_rwsplit")


def install(connection: BaseDatabaseWrapper) -> None:
    """Add :func:`visible_writes` to a primary connection's wrappers, once."""
    if visible_writes not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, visible_writes)


def visible_writes(
    execute: Callable[..., Any],
    sql: object,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """Execute wrapper of a primary: a write inside the block waits at its commit."""
    if not visibility.active():  # every primary statement: one lookup, no block
        return execute(sql, params, many, context)
    wrapper = context["connection"]
    config = conf.cluster_of(wrapper.alias)
    if (
        config is None
        or not visibility.wanted(config.name)
        or (isinstance(sql, str) and not sql_classify.is_write(sql))
    ):
        return execute(sql, params, many, context)
    autocommit = not wrapper.in_atomic_block and wrapper.get_autocommit()
    if (
        autocommit
        and isinstance(wrapper, VisibleCommits)
        and isinstance(sql, str)
        and _one_dml_statement(sql)
        and synchronous_replicas(config)
    ):
        # Its own transaction, as in autocommit: committed with remote_apply.
        with transaction.atomic(using=wrapper.alias):
            wrapper.visible_pending = True
            return execute(sql, params, many, context)
    result = execute(sql, params, many, context)
    if autocommit:
        make_visible(wrapper, config)
    elif isinstance(wrapper, VisibleCommits):
        wrapper.visible_pending = True
    elif not any(getattr(hook[1], "rwsplit", False) for hook in wrapper.run_on_commit):
        # Django's own engine: wait once the transaction committed (a
        # rolled-back transaction's hooks are dropped with it).
        hook = functools.partial(make_visible, wrapper, config)
        hook.rwsplit = True  # type: ignore[attr-defined]
        transaction.on_commit(hook, using=wrapper.alias)
    return result


# Statements that may run in a transaction block like any other (not VACUUM,
# CREATE INDEX CONCURRENTLY, CREATE DATABASE...).
_DML = frozenset({"insert", "update", "delete", "merge"})


def _one_dml_statement(sql: str) -> bool:
    """Whether ``sql`` is one INSERT, UPDATE, DELETE or MERGE statement."""
    words = sql_classify.tokens(sql)
    while words and words[-1] == ";":
        words = words[:-1]
    return bool(words) and words[0] in _DML and ";" not in words


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
        if synchronous_replicas(config):
            with self.connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = remote_apply")
            self._commit_within(config.visible_wait)
        else:
            super()._commit()
        # What the primary saw each standby apply tells who has the commit
        # (a cancelled wait, or standbys changed since the last round, leave
        # replicas to be asked).
        make_visible(self, config, started=started)

    def _rollback(self) -> None:
        self.visible_pending = False
        super()._rollback()  # type: ignore[misc]

    def _commit_within(self, seconds: float) -> None:
        """
        COMMIT, its wait for synchronous standbys cancelled after ``seconds``.

        The transaction is committed on the primary either way (PostgreSQL
        only stops waiting); what the primary saw each standby apply then
        tells which replicas have it.
        """
        connection = self.connection
        done = threading.Event()

        def cancel() -> None:
            if not done.wait(seconds):
                try:
                    connection.cancel_safe(timeout=2.0)
                except Exception:  # noqa: BLE001 - the wait is bounded anyway
                    logger.debug("Cancelling remote_apply failed.", exc_info=True)

        timer = threading.Thread(target=cancel, name="rwsplit-visible", daemon=True)
        timer.start()
        try:
            super()._commit()
        finally:
            done.set()


def synchronous_replicas(config: conf.Config) -> frozenset[str]:
    """Replicas in rotation the primary reports as synchronous (remote_apply)."""
    state = health_registry.process_health(config)
    primary = state.primary
    if primary is None or not primary.sync_standbys:
        return frozenset()
    names = set(primary.sync_standbys)
    return frozenset(
        alias
        for alias in state.rotation.members
        if (found := state.status(alias)) is not None and found.standby_name in names
    )


def make_visible(
    wrapper: BaseDatabaseWrapper,
    config: conf.Config,
    *,
    started: float | None = None,
) -> None:
    """
    Wait until every replica in rotation applied ``wrapper``'s last commit.

    The primary's own view of what each standby applied (read with the
    commit's position, one query) confirms the replicas a ``remote_apply``
    commit waited for; the others are asked their replay positions.
    """
    started = time.monotonic() if started is None else started
    state = health_registry.process_health(config)
    rotating = set(state.rotation.members)
    resting = [alias for alias in config.replicas if alias not in rotating]
    if not rotating and not resting:
        return
    lsn, applied = _position(wrapper)
    if lsn is None:
        return
    for alias in resting:  # out of rotation now: not readmitted before it
        state.hold_until_replayed(alias, lsn)
    others = []
    for alias in sorted(rotating):
        found = state.status(alias)
        name = found.standby_name if found is not None else None
        if name is None or applied.get(name, -1) < lsn:
            others.append(alias)
    if not others:
        return
    waited = wait_replayed(
        lsn,
        others,
        {alias: dict(connections.settings[alias]) for alias in others},
        deadline=started + config.visible_wait,
        check_timeout=config.check_timeout,
    )
    if waited.missing:
        _not_visible(config, state, waited, started)


def _not_visible(
    config: conf.Config, state: Any, waited: Waited, started: float
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
        sender=VisibleCommits,
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
        {alias: dict(connections.settings[alias]) for alias in missing},
        deadline=time.monotonic() + extra,
        check_timeout=config.check_timeout,
    )


# The primary's position after a commit, and what it saw each standby apply
# (standbys' names with their replay positions; NULL without the right to
# read them: pg_read_all_stats).
POSITION_SQL = (
    "SELECT pg_current_wal_lsn()::text,"
    " (SELECT string_agg(application_name || '=' || replay_lsn::text, ',')"
    " FROM pg_stat_replication WHERE replay_lsn IS NOT NULL)"
)


def _position(wrapper: BaseDatabaseWrapper) -> tuple[int | None, dict[str, int]]:
    """
    The primary's WAL position after the commit (None: not read), and the
    position the primary saw each standby apply, by name (a name two
    standbys share is left out: it tells nothing).
    """
    connection = wrapper.connection
    try:
        with connection.cursor() as cursor:
            cursor.execute(POSITION_SQL)
            row = cursor.fetchone()
        if not connection.autocommit:
            connection.rollback()  # after a COMMIT: end the query's own
    except Exception:  # noqa: BLE001 - the write stands; nothing to wait for
        logger.warning("visible_on_replicas(): the commit's position was not read.")
        return None, {}
    if not row:
        return None, {}
    applied: dict[str, int] = {}
    shared: set[str] = set()
    for entry in (row[1] or "").split(","):
        name, _, position = entry.rpartition("=")
        lsn = parse_lsn(position) if name else None
        if lsn is None:
            continue
        if name in applied:
            shared.add(name)
        applied[name] = lsn
    for name in shared:
        del applied[name]
    return parse_lsn(row[0]), applied
