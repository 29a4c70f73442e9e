"""
Writes that reach a replica connection run on the primary instead.

The router decides by ORM call, and to Django ``QuerySet.raw()`` and every
``SELECT`` are reads, however much they write (``raw("INSERT ...
RETURNING")``, ``nextval()``, advisory locks). On a replica alias, in
autocommit and on a client-side cursor, such a statement runs on the
primary's connection before a replica sees it, when the write classifier
(:mod:`django_rwsplit.sql_classify`) finds it a write; one the classifier
missed, which the replica refuses as read-only (SQLSTATE 25006), runs there
once more. Either way the primary's execute wrappers see it, so it pins the
request like any write. Inside a transaction on the replica nothing moves:
the transaction's state lives there.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.db import DatabaseError, connections

from django_rwsplit import conf, signals, writes
from django_rwsplit.backends.postgresql.retry import sqlstate_of
from django_rwsplit.origin import query_origin
from django_rwsplit.sql_classify import is_write

__all__ = [
    "READ_ONLY_REFUSAL",
    "REFUSED_AS_WRITE",
    "run_on_primary",
    "send_writes_to_primary",
]

logger = logging.getLogger("django_rwsplit")

# "cannot execute INSERT in a read-only transaction"
READ_ONLY_REFUSAL = "25006"
# The ``reason`` of read_retried for such a retry.
REFUSED_AS_WRITE = "read_only"


def send_writes_to_primary(
    execute: Any, sql: object, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Execute wrapper of every connection of the engine (see module docstring)."""
    wrapper = context["connection"]
    primary = _primary_of_replica(wrapper)
    if (
        primary is None
        or wrapper.in_atomic_block
        or getattr(context["cursor"].cursor, "name", None)  # server-side
    ):
        return execute(sql, params, many, context)
    cursor = context["cursor"]
    if not isinstance(sql, str) or is_write(sql):
        return run_on_primary(primary, cursor, sql, params, many)
    try:
        return execute(sql, params, many, context)
    except DatabaseError as error:
        if sqlstate_of(error) != READ_ONLY_REFUSAL:
            raise
    logger.warning(
        "Replica %r refused a statement as a write (SQLSTATE 25006); it runs "
        "again on the primary %r. Issued from %s: %.200s",
        wrapper.alias,
        primary,
        query_origin(),
        sql,
    )
    signals.send_robust(
        signals.read_retried,
        sender=type(wrapper),
        alias=wrapper.alias,
        reason=REFUSED_AS_WRITE,
        attempt=1,
    )
    # The classifier missed it on the primary's side too: pin by hand.
    result = run_on_primary(primary, cursor, sql, params, many)
    writes.note_write_on(primary)
    return result


def _primary_of_replica(wrapper: Any) -> str | None:
    """
    The primary of ``wrapper``'s cluster if its alias is a replica (else None).

    Kept on the wrapper until the setting changes: this runs for every query.
    """
    config = conf.cached
    known = wrapper.__dict__.get("_rwsplit_replica_of")
    if known is not None and config is not None and known[0] is config:
        return known[1]  # type: ignore[no-any-return]
    cluster = conf.cluster_of(wrapper.alias)
    primary = (
        cluster.primary
        if cluster is not None and wrapper.alias in cluster.replicas
        else None
    )
    wrapper._rwsplit_replica_of = (conf.cached, primary)
    return primary


def run_on_primary(primary: str, cursor: Any, sql: Any, params: Any, many: bool) -> Any:
    """
    Run a statement on ``primary`` and give ``cursor`` its results.

    It goes through the primary's own cursor wrapper (its execute wrappers:
    the write detector pins the request), and the caller's cursor then reads
    the primary's rows (``RETURNING``, ``fetchall()``, ``description``).
    """
    moved = connections[primary].cursor()
    result = moved.executemany(sql, params) if many else moved.execute(sql, params)
    old = cursor.cursor
    cursor.cursor = moved.cursor
    with contextlib.suppress(Exception):  # the replica's cursor is unused now
        old.close()
    return result
