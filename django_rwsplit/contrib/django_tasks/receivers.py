"""The ``django.tasks`` signal receivers: the token into a cache, a scope per run."""

from __future__ import annotations

import math
from typing import Any

from django.core.cache import BaseCache, caches
from django.tasks import signals

from django_rwsplit import task_scopes
from django_rwsplit.conf import get_config
from django_rwsplit.contrib.django_tasks import ATTRIBUTE

running = task_scopes.RunningScopes()
_UID = "django_rwsplit.contrib.django_tasks"
PREFIX = "rwsplit:task-token:"


def _cache() -> BaseCache:
    return caches[get_config().health_cache or "default"]


def remember_token(task_result: Any = None, **kwargs: Any) -> None:
    """``task_enqueued``: keep the enqueuing context's token for the task."""
    if task_result is None:
        return
    token = task_scopes.publisher_token()
    if token is not None:
        timeout = max(1, math.ceil(get_config().sticky_seconds))
        _cache().set(PREFIX + str(task_result.id), token, timeout=timeout)


def enter_scope(task_result: Any = None, **kwargs: Any) -> None:
    """``task_started``: run the task in a routing scope of its own."""
    if task_result is None:
        return
    token = _cache().get(PREFIX + str(task_result.id))
    func = getattr(task_result.task, "func", None)
    policy = getattr(func, ATTRIBUTE, task_scopes.AFTER_PUBLISHER)
    running.enter(str(task_result.id), task_scopes.scope_for(token, policy))


def leave_scope(task_result: Any = None, **kwargs: Any) -> None:
    """``task_finished`` (success or failure): leave the task's scope."""
    if task_result is None:
        return
    running.leave(str(task_result.id))
    _cache().delete(PREFIX + str(task_result.id))


def connect() -> None:
    """Connect the receivers (idempotent)."""
    signals.task_enqueued.connect(remember_token, weak=False, dispatch_uid=_UID)
    signals.task_started.connect(enter_scope, weak=False, dispatch_uid=_UID)
    signals.task_finished.connect(leave_scope, weak=False, dispatch_uid=_UID)


def disconnect() -> None:
    """Disconnect the receivers (tests: the integration turned off)."""
    signals.task_enqueued.disconnect(dispatch_uid=_UID)
    signals.task_started.disconnect(dispatch_uid=_UID)
    signals.task_finished.disconnect(dispatch_uid=_UID)
