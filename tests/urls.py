from __future__ import annotations

from django.urls import path

from tests import views, views_hidden_writes

urlpatterns = [
    path("read/", views.read),
    path("write/", views.write_then_read),
    path("raw-write/", views.raw_write_then_read),
    path("post/", views.post_view),
    path("fail/", views.fail),
    path("async-read/", views.async_read),
    path("create/", views.create),
    path("atomic-read/", views.atomic_read),
    path("slow-read/", views.slow_read),
    path("slow-write/", views.slow_write),
    path("item/<int:pk>/", views.item),
    path("api/create/", views.api_create),
    path("api/item/<int:pk>/", views.api_item),
    path("hidden-write/<str:case>/", views_hidden_writes.hidden_write),
    path("sneaky-write/<str:case>/", views_hidden_writes.sneaky_write),
    path("file-after-write/", views_hidden_writes.file_after_write),
    path("stream-after-write/", views_hidden_writes.stream_after_write),
    path("async-stream-after-write/", views_hidden_writes.async_stream_after_write),
]
