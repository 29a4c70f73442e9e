from __future__ import annotations

from django.contrib import admin

from example_project.shop.models import Note, Order, Product

admin.site.register(Product, list_display=["name", "price", "stock"])
admin.site.register(Order, list_display=["id", "product", "quantity", "created_at"])
admin.site.register(Note, list_display=["id", "text", "created_at"])
