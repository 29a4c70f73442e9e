from __future__ import annotations

from django.urls import path

from example_project.shop import views

app_name = "shop"
urlpatterns = [
    path("", views.product_list, name="product_list"),
    path("orders/", views.place_order, name="place_order"),
    path("orders/<int:pk>/", views.order_detail, name="order_detail"),
    path("api/whoami/", views.api_whoami, name="api_whoami"),
    path("api/write/", views.api_write, name="api_write"),
    path("api/read/<int:pk>/", views.api_read, name="api_read"),
    path("api/pin/", views.api_pin, name="api_pin"),
    path("api/health/", views.api_health, name="api_health"),
]
