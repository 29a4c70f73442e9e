"""Connects the Celery signals when the app is ready."""

from __future__ import annotations

from django.apps import AppConfig
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
