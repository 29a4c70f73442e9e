from __future__ import annotations

import views
from django.urls import include, path

urlpatterns = [
    path("events/", views.create_event),
    path("events/<int:pk>/", views.read_event),
    path("rwsplit/", include("django_rwsplit.urls")),
]
