"""Notice writes on the primary connection, whatever issued them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from django_rwsplit import conf, pinning, sql_classify
from django_rwsplit.conf import DEFAULT_CLUSTER
from django_rwsplit.exceptions import PrimaryUnavailable
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.verdict import PrimaryVerdict, judge_primary
from django_rwsplit.sql_classify import is_write

__all__ = [
    "READ_ONLY_VERBS",
    "detect_writes",
    "install",
    "is_write",
    "note_write_on",
    "refuse_if_demoted",
]


# Kept for code that imported it from here (upper case, as it always was).
READ_ONLY_VERBS = frozenset(verb.upper() for verb in sql_classify.READ_ONLY_VERBS)


def detect_writes(
    execute: Callable[..., Any],
    sql: object,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """Execute wrapper: pin the current context when ``sql`` writes."""
    # Composed SQL objects (psycopg.sql) are not inspected: count them as writes.
    if not isinstance(sql, str) or is_write(sql):
        alias = context["connection"].alias
        note_write_on(alias)
        refuse_if_demoted(alias)
    return execute(sql, params, many, context)


def note_write_on(alias: str) -> None:
    """Pin the current context's reads of ``alias``'s cluster: it wrote there."""
    config = conf.cached or conf.get_config()
    if config.clusters:
        pinning.note_write(config.alias_clusters.get(alias, DEFAULT_CLUSTER))
    else:
        pinning.note_write()


def refuse_if_demoted(alias: str) -> None:
    """Raise PrimaryUnavailable if health checks found the primary read-only."""
    state = health_registry.for_alias(alias)
    primary = state.tracker.primary if state is not None else None
    if (
        primary is not None
        and primary.alias == alias
        and judge_primary(primary) is PrimaryVerdict.IN_RECOVERY
    ):
        raise PrimaryUnavailable(
            f"Primary database {alias!r} ({primary.endpoint}) is in recovery "
            "(read-only, demoted by a failover?); refusing to write. Point "
            f'DATABASES["{alias}"] at the new primary.'
        )


def install(connection: BaseDatabaseWrapper) -> None:
    """
    Add :func:`detect_writes` to ``connection.execute_wrappers`` once.

    Execute wrappers are Django's public hook into every statement a
    connection runs, including raw SQL through ``connection.cursor()``, which
    no router method sees. psycopg's ``cursor.copy()`` passes no wrapper:
    the open connection's cursors are given a ``copy`` that notes writes too.
    """
    if detect_writes not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, detect_writes)
    raw = connection.connection
    factory = getattr(raw, "cursor_factory", None)
    if isinstance(factory, type) and hasattr(factory, "copy"):
        raw.cursor_factory = _noting_copies(factory, connection.alias)


@functools.cache
def _noting_copies(factory: type[Any], alias: str) -> type[Any]:
    """``factory`` (a psycopg cursor class) whose ``copy`` notes writes on ``alias``."""
    if getattr(factory, "rwsplit_alias", None) == alias:
        return factory

    def copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(statement, str) or is_write(statement):
            note_write_on(alias)
            refuse_if_demoted(alias)
        return factory.copy(self, statement, *args, **kwargs)

    return type(factory.__name__, (factory,), {"copy": copy, "rwsplit_alias": alias})
