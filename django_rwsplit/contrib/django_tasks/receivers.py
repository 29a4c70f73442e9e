"""
The ``django.tasks`` signal receivers: the token into a cache, a scope per run.

Django sends these signals with ``send()``: a receiver that raised would fail
``Task.enqueue()`` after its write succeeded. Every cache call here is
bounded by ``CHECK_TIMEOUT`` and never raises: a token that cannot be stored
is logged and lost (the task then reads as one whose publisher did not
write), and a task whose token cannot be read runs with every read on the
primary.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

from django.tasks import signals

from django_rwsplit import task_scopes
from django_rwsplit.cache_calls import CacheUnavailable, bounded_cache_call
from django_rwsplit.conf import get_config
from django_rwsplit.contrib.django_tasks import ATTRIBUTE

logger = logging.getLogger("django_rwsplit")

running = task_scopes.RunningScopes()
_UID = "django_rwsplit.contrib.django_tasks"
PREFIX = "rwsplit:task-token:"


def _cache_alias() -> str:
    return get_config().health_cache or "default"


def remember_token(task_result: Any = None, **kwargs: Any) -> None:
    """``task_enqueued``: keep the enqueuing context's token for the task."""
    if task_result is None:
        return
    token = task_scopes.publisher_token()
    if token is None:
        return
    config = get_config()
    timeout = max(1, math.ceil(config.sticky_seconds))
    key = PREFIX + str(task_result.id)
    try:
        bounded_cache_call(
            _cache_alias(),
            config.check_timeout,
            lambda cache: cache.set(key, token, timeout=timeout),
        )
    except CacheUnavailable as error:
        logger.error(
            "Task %s: could not store its read-your-writes token (%s); it "
            "may read rows older than the write before its enqueue.",
            task_result.id,
            error,
        )


def enter_scope(task_result: Any = None, **kwargs: Any) -> None:
    """``task_started``: run the task in a routing scope of its own."""
    if task_result is None:
        return
    func = getattr(task_result.task, "func", None)
    policy = getattr(func, ATTRIBUTE, task_scopes.AFTER_PUBLISHER)
    key = PREFIX + str(task_result.id)
    try:
        token = bounded_cache_call(
            _cache_alias(), get_config().check_timeout, lambda cache: cache.get(key)
        )
    except CacheUnavailable as error:
        logger.warning(
            "Task %s: could not read its token (%s); its reads use the primary.",
            task_result.id,
            error,
        )
        scope = task_scopes.scope_for(None, task_scopes.PRIMARY)
    else:
        scope = task_scopes.scope_for(token, policy)
    running.enter(str(task_result.id), scope)


def leave_scope(task_result: Any = None, **kwargs: Any) -> None:
    """``task_finished`` (success or failure): leave the task's scope."""
    if task_result is None:
        return
    running.leave(str(task_result.id))
    key = PREFIX + str(task_result.id)
    with contextlib.suppress(CacheUnavailable):  # else it expires by itself
        bounded_cache_call(
            _cache_alias(), get_config().check_timeout, lambda cache: cache.delete(key)
        )


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
