"""
The moment a primary moves: what happens to the write under way.

A write on the primary alias that fails because the server went away or
became read-only (connection closed, ``57P01`` and the other shutdown codes,
``25006``, class ``08``) is:

- run once more on the new primary when it provably did not run (an
  autocommit statement refused as read-only: ``25006`` is raised before
  execution, by a demoted primary) or when running it twice changes nothing
  (an autocommit read: a query pinned to the primary on a connection the
  server closed, after a restart);
- otherwise never repeated: it raises
  :class:`~django_rwsplit.exceptions.WriteInterrupted` (a
  ``PrimaryUnavailable``) saying whether its outcome is unknown (an
  autocommit statement or a COMMIT in flight) or known (a transaction the
  server rolled back). ``PinPrimaryMiddleware`` answers it with a 503.

``RWSPLIT["PRIMARY_WAIT"]`` (seconds, default 0) lets a write that finds no
writable node wait for one to appear before it fails. A COMMIT is never
replayed.
"""

from __future__ import annotations

from typing import Any

from django.db.utils import InterfaceError, OperationalError

from django_rwsplit.backends.postgresql.retry import SERVER_SHUTDOWN, sqlstate_of
from django_rwsplit.exceptions import WriteInterrupted
from django_rwsplit.sql_classify import is_write

__all__ = ["SWITCH_SQLSTATES", "follow_the_primary", "switch_error"]

# Server shutdown, crash, cannot connect now; read-only (a demoted primary).
SWITCH_SQLSTATES = SERVER_SHUTDOWN | {"25006"}


def switch_error(error: BaseException, connection: Any) -> str | None:
    """The SQLSTATE (or "broken") when ``error`` means the primary went away."""
    sqlstate = sqlstate_of(error)
    if sqlstate is not None and (
        sqlstate in SWITCH_SQLSTATES or sqlstate.startswith("08")
    ):
        return str(sqlstate)
    raw = connection
    if raw is None or raw.closed or raw.broken:
        return "broken"
    return None


def follow_the_primary(
    execute: Any, sql: Any, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Execute wrapper of primary connections (see the module docstring)."""
    try:
        return execute(sql, params, many, context)
    except (OperationalError, InterfaceError) as error:
        wrapper = context["connection"]
        kind = switch_error(error, wrapper.connection)
        if kind is None or not wrapper.is_cluster_primary():
            raise
        in_transaction = wrapper.in_atomic_block
        reads_only = isinstance(sql, str) and not is_write(sql)
        if not in_transaction and (kind == "25006" or reads_only):
            # Refused before it ran, or only read: once more, on the node
            # writes go to now. Reconnecting asks the nodes afresh and waits
            # up to PRIMARY_WAIT.
            wrapper.leave_node()
            wrapper.ensure_connection()
            context["cursor"].cursor = wrapper.create_cursor()
            return execute(sql, params, many, context)
        wrapper.leave_node()
        if in_transaction:
            raise WriteInterrupted(
                f"The primary went away during a transaction ({kind}); the "
                "server rolled it back: nothing of it was written.",
                outcome_unknown=False,
            ) from error
        raise WriteInterrupted(
            f"The primary went away while a statement ran ({kind}); it may or "
            "may not have been applied (outcome unknown): check before "
            "repeating it.",
            outcome_unknown=True,
        ) from error
