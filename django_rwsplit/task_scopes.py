"""
Routing scopes for background tasks: the token a task carries, and its scope.

A task published by a context that wrote carries that context's token
(:func:`publisher_token`); the worker runs the task in a scope of its own
(:func:`scope_for`), entered when the task starts and left when it ends
(:class:`RunningScopes`), so nothing carries over to the next task of the
same process, thread or greenlet. Used by :mod:`django_rwsplit.contrib.celery`
and :mod:`django_rwsplit.contrib.django_tasks`.
"""

from __future__ import annotations

import logging
import threading
from contextvars import Token

from django.core.exceptions import SynchronousOnlyOperation

from django_rwsplit import consistency, forks, pinning
from django_rwsplit.conf import get_config
from django_rwsplit.pin_reasons import PinReason

logger = logging.getLogger("django_rwsplit")

# Per-task read policies.
AFTER_PUBLISHER = "after_publisher"  # replicas that replayed the publisher's writes
PRIMARY = "primary"  # every read on the primary
REPLICAS = "replicas"  # any replica in rotation, whatever the publisher did
POLICIES = (AFTER_PUBLISHER, PRIMARY, REPLICAS)


def publisher_token() -> str | None:
    """
    Return the publishing context's token (None when it did not write).

    From async code, where the primary's position cannot be read, a
    time-only token (reads on the primary for ``STICKY_SECONDS``): weaker,
    never stale.
    """
    try:
        return consistency.current_token()
    except SynchronousOnlyOperation:
        return consistency.time_token(consistency.written_clusters(get_config()))


def scope_for(token: object, policy: str = AFTER_PUBLISHER) -> pinning.Scope:
    """Return the routing scope a task runs in, by its ``policy`` (ValueError)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown rwsplit task policy {policy!r}; use {POLICIES}")
    if policy == PRIMARY:
        scope = pinning.Scope()
        scope.pin_everywhere(PinReason.TASK_PRIMARY)
        return scope
    if policy == REPLICAS or token is None:
        return pinning.Scope()
    decoded = consistency.decode(token, get_config())
    if decoded is None:  # forged, expired or garbage: as if there were none
        return pinning.Scope()
    return consistency.scope_after(decoded)


class RunningScopes:
    """The scopes of the tasks running now, by task id (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        forks.renew_after_fork(self)
        self._resets: dict[str, Token[pinning.Scope | None]] = {}

    def enter(self, task_id: str, scope: pinning.Scope) -> None:
        """Make ``scope`` current for the task about to run in this context."""
        reset = pinning.activate(scope)
        with self._lock:
            self._resets[task_id] = reset

    def leave(self, task_id: str) -> None:
        """Restore the scope that was current before the task (same context)."""
        with self._lock:
            reset = self._resets.pop(task_id, None)
        if reset is None:
            return
        try:
            pinning.deactivate(reset)
        except ValueError:  # entered in another context: nothing to restore here
            logger.debug("task %s ended in another context than it began", task_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._resets)
