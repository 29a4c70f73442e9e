from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # rwsplit/health/ (JSON for monitors) and rwsplit/status/ (a page for staff).
    path("rwsplit/", include("django_rwsplit.urls")),
    path("", include("example_project.shop.urls")),
]
