"""``manage.py seed [--count N] [--force]``: demo data from the factories."""

from __future__ import annotations

import random
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from django_rwsplit import pin_primary
from example_project.shop.factories import NoteFactory, OrderFactory, ProductFactory
from example_project.shop.models import Order, Product


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
