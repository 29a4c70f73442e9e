"""Connects the Celery signals when the app is ready."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class RwsplitCeleryConfig(AppConfig):
    name = "django_rwsplit.contrib.celery"
    label = "rwsplit_celery"
    verbose_name = "Read/write split: Celery tasks"

    def ready(self) -> None:
        try:
            import celery  # noqa: F401
        except ImportError:
            raise ImproperlyConfigured(
                "django_rwsplit.contrib.celery needs Celery: "
                "pip install django-rwsplit[celery]"
            ) from None
        from django_rwsplit.contrib.celery import receivers

        receivers.connect()
        checks.register(check_task_policies)


def check_task_policies(**kwargs: Any) -> list[checks.CheckMessage]:
    """rwsplit.E027: a Celery task of the current app with a mistyped policy."""
    from celery import current_app

    from django_rwsplit.contrib.celery import receivers

    problem = receivers.policy_problem(current_app)
    if problem is None:
        return []
    return [
        checks.Error(
            problem,
            hint='Set @app.task(rwsplit_reads=...) to "after_publisher", '
            '"primary" or "replicas".',
            id="rwsplit.E027",
        )
    ]
