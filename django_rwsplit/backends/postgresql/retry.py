"""
Which failed replica reads may run again elsewhere, and why.

Only autocommit reads on a replica alias are retried: they are idempotent,
and no transaction state is lost by running them on another server. A read
inside ``atomic()`` on a replica, or on a server-side cursor, is never
retried; its error reaches the caller.
"""

from __future__ import annotations

# A hot standby cancels queries that conflict with WAL replay
# ("canceling statement due to conflict with recovery"): 40001, and 40P01
# for buffer-pin deadlocks. Nothing else raises these on a replica in
# autocommit (a standby cannot run SERIALIZABLE transactions).
RECOVERY_CONFLICT = frozenset({"40001", "40P01"})
# The server is shutting down, crashed, or not accepting connections yet.
SERVER_SHUTDOWN = frozenset({"57P01", "57P02", "57P03"})
# Retries of one query, after the first attempt.
MAX_RETRIES = 2

REASONS = ("recovery_conflict", "server_shutdown", "connection_broken")


def sqlstate_of(error: BaseException) -> str | None:
    """Return the SQLSTATE of a psycopg error, or of the one Django wrapped."""
    for candidate in (error, error.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def retry_reason(error: BaseException, *, broken: bool) -> str | None:
    """
    Return why a failed read may run again, or None when it must not.

    ``broken`` says the connection itself no longer works (the server died,
    or the health monitor released it from a hung server).
    """
    state = sqlstate_of(error)
    if state in RECOVERY_CONFLICT:
        return "recovery_conflict"
    if state in SERVER_SHUTDOWN:
        return "server_shutdown"
    # Class 08, connection exception: what a pooler in front of the replica
    # (PgBouncer) answers when the server behind it died.
    if broken or (state or "").startswith("08"):
        return "connection_broken"
    return None
