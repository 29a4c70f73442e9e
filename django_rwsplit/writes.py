"""Notice writes on the primary connection, whatever issued them."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from django_rwsplit import conf, pinning
from django_rwsplit.conf import DEFAULT_CLUSTER
from django_rwsplit.exceptions import PrimaryUnavailable
from django_rwsplit.health import state as health_state

# Statements that never change data. Anything else counts as a write.
READ_ONLY_VERBS = frozenset(
    {
        "SELECT",
        "SHOW",
        "EXPLAIN",
        "VALUES",
        "TABLE",
        "SET",
        "RESET",
        "BEGIN",
        "START",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "FETCH",
        "MOVE",
        "CLOSE",
        "DECLARE",
        "DISCARD",
        "DEALLOCATE",
        "LISTEN",
        "UNLISTEN",
    }
)
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*", re.DOTALL)
_DATA_CHANGING = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
# SELECT ... INTO new_table (CREATE TABLE AS by another name).
_INTO = re.compile(r"\bINTO\b", re.IGNORECASE)
_ANALYZE = re.compile(r"\bANALY[SZ]E\b", re.IGNORECASE)
_CREATES = re.compile(r"\bCREATE\b", re.IGNORECASE)
# A string literal ('it''s'): its words are not SQL.
_STRING = re.compile(r"'(?:[^']|'')*'")


@functools.lru_cache(maxsize=2048)
def is_write(sql: str) -> bool:
    """
    Return whether ``sql`` may change data (conservatively: unknown is a write).

    Each statement counts (``SELECT 1; DELETE ...`` writes), and so do
    ``SELECT ... INTO``, a ``WITH`` holding a data-changing statement, and
    ``EXPLAIN ANALYZE`` (which runs its statement) of a write.
    """
    text = _STRING.sub("''", sql)
    statements = [part for part in text.split(";") if part.strip()] or [text]
    return any(_statement_writes(statement) for statement in statements)


def _statement_writes(statement: str) -> bool:
    body = _LEADING_NOISE.sub("", statement, count=1)
    verb = body[:12].split(None, 1)[0].upper() if body.strip() else ""
    if verb == "WITH":
        return bool(_DATA_CHANGING.search(body) or _INTO.search(body))
    if verb in ("SELECT", "TABLE", "VALUES"):
        return bool(_INTO.search(body))
    if verb == "EXPLAIN":
        return bool(_ANALYZE.search(body)) and bool(
            _DATA_CHANGING.search(body) or _INTO.search(body) or _CREATES.search(body)
        )
    return verb not in READ_ONLY_VERBS


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
        config = conf.cached or conf.get_config()
        if config.clusters:
            pinning.note_write(config.alias_clusters.get(alias, DEFAULT_CLUSTER))
        else:
            pinning.note_write()
        refuse_if_demoted(alias)
    return execute(sql, params, many, context)


def refuse_if_demoted(alias: str) -> None:
    """Raise PrimaryUnavailable if health checks found the primary read-only."""
    state = health_state.for_alias(alias)
    primary = state.tracker.primary if state is not None else None
    if primary is not None and primary.alias == alias and primary.in_recovery:
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
    no router method sees.
    """
    if detect_writes not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, detect_writes)
