from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from example_project.shop.metrics_view import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    # rwsplit/health/ (JSON for monitors) and rwsplit/status/ (a page for staff).
    path("rwsplit/", include("django_rwsplit.urls")),
    # Prometheus (RWSPLIT_METRICS=true; every worker with PROMETHEUS_MULTIPROC_DIR).
    path("metrics", metrics),
    path("", include("example_project.shop.urls")),
]
