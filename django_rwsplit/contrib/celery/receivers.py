"""The Celery signal receivers: the token into the message, the scope around a run."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from django_rwsplit import task_scopes
from django_rwsplit.contrib.celery import HEADER, OPTION

logger = logging.getLogger("django_rwsplit")

running = task_scopes.RunningScopes()
_UID = "django_rwsplit.contrib.celery"


def attach_token(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """``before_task_publish``: put the publishing context's token in the headers."""
    if headers is None:
        return
    token = task_scopes.publisher_token()
    if token is not None:
        headers[HEADER] = token


def message_token(request: Any) -> object:
    """Return the token a task's message carried (None when it carried none)."""
    token = getattr(request, HEADER, None)
    if token is None:
        token = (getattr(request, "headers", None) or {}).get(HEADER)
    return token


def enter_scope(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    """``task_prerun``: run the task in a routing scope of its own."""
    if task_id is None or task is None:
        return
    request = task.request
    token = message_token(request)
    if token is None and getattr(request, "is_eager", False):
        # Run in the caller's process and context (task_always_eager, apply()).
        token = task_scopes.publisher_token()
    policy = getattr(task, OPTION, None) or task_scopes.AFTER_PUBLISHER
    try:
        scope = task_scopes.scope_for(token, policy)
    except ValueError as error:  # a typo that escaped the worker's start-up check
        logger.error("Task %s: %s; its reads use the primary.", task.name, error)
        scope = task_scopes.scope_for(None, task_scopes.PRIMARY)
    running.enter(task_id, scope)


def invalid_policies(app: Any) -> list[str]:
    """The registered tasks of ``app`` whose ``rwsplit_reads`` is not a policy."""
    return sorted(
        f"{name} (rwsplit_reads={getattr(task, OPTION)!r})"
        for name, task in app.tasks.items()
        if getattr(task, OPTION, None) not in (None, *task_scopes.POLICIES)
    )


def policy_problem(app: Any) -> str | None:
    """Say which tasks of ``app`` have a mistyped ``rwsplit_reads`` (None: none)."""
    invalid = invalid_policies(app)
    if not invalid:
        return None
    return (
        f"Unknown {OPTION} in Celery tasks: {', '.join(invalid)}; use one of "
        f"{', '.join(task_scopes.POLICIES)}."
    )


def check_policies(sender: Any = None, **kwargs: Any) -> None:
    """
    ``worker_init``: a worker with a mistyped ``rwsplit_reads`` does not start.

    Celery logs and swallows a receiver's exception, so the worker is
    stopped with ``SystemExit`` and the message; its queue keeps every task.
    """
    app = getattr(sender, "app", None)
    problem = None if app is None else policy_problem(app)
    if problem is not None:
        logger.error("%s", problem)
        raise SystemExit(problem)


def leave_scope(task_id: str | None = None, **kwargs: Any) -> None:
    """``task_postrun`` (sent after success and failure): leave the task's scope."""
    if task_id is not None:
        running.leave(task_id)


def connect() -> None:
    """Connect the receivers (idempotent)."""
    signals.before_task_publish.connect(attach_token, weak=False, dispatch_uid=_UID)
    signals.task_prerun.connect(enter_scope, weak=False, dispatch_uid=_UID)
    signals.task_postrun.connect(leave_scope, weak=False, dispatch_uid=_UID)
    signals.worker_init.connect(check_policies, weak=False, dispatch_uid=_UID)


def disconnect() -> None:
    """Disconnect the receivers (tests: the integration turned off)."""
    signals.before_task_publish.disconnect(dispatch_uid=_UID)
    signals.task_prerun.disconnect(dispatch_uid=_UID)
    signals.task_postrun.disconnect(dispatch_uid=_UID)
    signals.worker_init.disconnect(dispatch_uid=_UID)
