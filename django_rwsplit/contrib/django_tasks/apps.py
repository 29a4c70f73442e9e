"""Connects the ``django.tasks`` signals when the app is ready."""

from __future__ import annotations

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class RwsplitDjangoTasksConfig(AppConfig):
    name = "django_rwsplit.contrib.django_tasks"
    label = "rwsplit_django_tasks"
    verbose_name = "Read/write split: Django tasks"

    def ready(self) -> None:
        try:
            import django.tasks  # noqa: F401
        except ImportError:
            raise ImproperlyConfigured(
                "django_rwsplit.contrib.django_tasks needs Django 6.0 or later "
                "(django.tasks)."
            ) from None
        from django_rwsplit.contrib.django_tasks import receivers

        receivers.connect()
