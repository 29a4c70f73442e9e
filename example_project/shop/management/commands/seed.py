"""
``manage.py seed [--count N] [--force]``: demo data from the factories.

Also creates the demo's staff user (``demo``, password ``demo``) if missing, to
open ``/rwsplit/status/`` and the admin: a demo login, never for production.
"""

from __future__ import annotations

import random
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from django_rwsplit import pin_primary
from example_project.shop.factories import NoteFactory, OrderFactory, ProductFactory
from example_project.shop.models import Order, Product

DEMO_USER = "demo"
DEMO_PASSWORD = "demo"


class Command(BaseCommand):
    help = "Create demo products, orders and notes, unless there already are some."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--count", type=int, default=12, help="products to create (default 12)"
        )
        parser.add_argument(
            "--force", action="store_true", help="seed even if products exist"
        )

    def handle(self, *args: Any, count: int, force: bool, **options: Any) -> None:
        # Right after `migrate` a replica may not have replayed the new tables
        # yet, so this command reads from the primary only.
        with pin_primary(), transaction.atomic():
            self.create_demo_user()
            existing = Product.objects.count()
            if existing and not force:
                self.stdout.write(
                    f"Already seeded ({existing} products); --force adds more."
                )
                return
            ProductFactory.reset_sequence(existing)  # type: ignore[no-untyped-call]
            products = ProductFactory.create_batch(count)
            for _ in range(count // 2):
                OrderFactory.create(product=random.choice(products))
            NoteFactory.create_batch(3)
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {count} products and {count // 2} orders "
                f"({Order.objects.using('default').count()} orders in all)."
            )
        )

    def create_demo_user(self) -> None:
        """The demo's staff login for the status page and the admin."""
        users = get_user_model().objects
        if users.filter(username=DEMO_USER).exists():
            return
        users.create_superuser(DEMO_USER, email="", password=DEMO_PASSWORD)
        self.stdout.write(
            f"Created staff user {DEMO_USER!r} (password {DEMO_PASSWORD!r})."
        )
