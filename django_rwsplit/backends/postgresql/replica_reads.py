"""
The execute wrapper of replica connections: measure, release, retry elsewhere.

Each query on a replica alias is measured for the adaptive balancer (on the
server that really answers, a substitute included), registered so that a
hung server's sockets can be shut down (:mod:`~django_rwsplit.health.release`),
and, when it fails in a way :func:`~.retry.retry_reason` allows, run again on
the connection the engine reopens where the read planner says, announced with
:data:`~django_rwsplit.signals.read_retried` (at most :data:`~.retry.MAX_RETRIES`).
"""

from __future__ import annotations

from typing import Any

from django.db.utils import InterfaceError, OperationalError

from django_rwsplit import observe, signals
from django_rwsplit.backends.postgresql.retry import MAX_RETRIES
from django_rwsplit.health import load, release

__all__ = ["retry_elsewhere"]


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
                sender=type(wrapper),
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
