from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "example_project.shop"
    label = "shop"
    verbose_name = "Demo shop"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from example_project.shop.middleware import install_query_log

        connection_created.connect(install_query_log, dispatch_uid="shop_query_log")
