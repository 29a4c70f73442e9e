"""
URLs of the health endpoint and the status page.

``path("rwsplit/", include("django_rwsplit.urls"))`` serves ``rwsplit/health/``
(JSON for monitors), ``rwsplit/status/`` (a page for staff) and
``rwsplit/status/data/`` (the page's JSON).
"""

from __future__ import annotations

from django.urls import path

from django_rwsplit import views

app_name = "django_rwsplit"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("status/", views.status, name="status"),
    path("status/data/", views.status_data, name="status-data"),
]
