"""The Celery signal receivers: the token into the message, the scope around a run."""

from __future__ import annotations

from typing import Any

from celery import signals

from django_rwsplit import task_scopes
from django_rwsplit.contrib.celery import HEADER, OPTION

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
    running.enter(task_id, task_scopes.scope_for(token, policy))


def leave_scope(task_id: str | None = None, **kwargs: Any) -> None:
    """``task_postrun`` (sent after success and failure): leave the task's scope."""
    if task_id is not None:
        running.leave(task_id)


def connect() -> None:
    """Connect the receivers (idempotent)."""
    signals.before_task_publish.connect(attach_token, weak=False, dispatch_uid=_UID)
    signals.task_prerun.connect(enter_scope, weak=False, dispatch_uid=_UID)
    signals.task_postrun.connect(leave_scope, weak=False, dispatch_uid=_UID)


def disconnect() -> None:
    """Disconnect the receivers (tests: the integration turned off)."""
    signals.before_task_publish.disconnect(dispatch_uid=_UID)
    signals.task_prerun.disconnect(dispatch_uid=_UID)
    signals.task_postrun.disconnect(dispatch_uid=_UID)
