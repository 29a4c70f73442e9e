"""
Read-your-writes for Django's own tasks (``django.tasks``, Django 6.0 and
later): add ``"django_rwsplit.contrib.django_tasks"`` to ``INSTALLED_APPS``.

Django's task results carry no headers, so the token of a context that
wrote is stored, when the task is enqueued (``task_enqueued``), in a cache
under the result's id for ``STICKY_SECONDS``: the ``HEALTH_CACHE`` alias, else
``"default"`` (it must be shared with the workers of an out-of-process
backend). When the task starts (``task_started``) it runs in its own routing
scope, left when it finishes (``task_finished``), as with Celery. Choose the
policy per task with :func:`reads` under ``@task``::

    @task
    @reads("primary")
    def reconcile(): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django_rwsplit.task_scopes import AFTER_PUBLISHER, POLICIES, PRIMARY, REPLICAS

__all__ = ["AFTER_PUBLISHER", "POLICIES", "PRIMARY", "REPLICAS", "reads"]

_F = TypeVar("_F", bound=Callable[..., Any])
ATTRIBUTE = "rwsplit_reads"


def reads(policy: str) -> Callable[[_F], _F]:
    """Set a task function's read policy: ``"after_publisher"``, ``"primary"``..."""
    if policy not in POLICIES:
        raise ValueError(f"unknown rwsplit task policy {policy!r}; use {POLICIES}")

    def decorate(func: _F) -> _F:
        setattr(func, ATTRIBUTE, policy)
        return func

    return decorate
