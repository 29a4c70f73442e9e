"""factory-boy factories for the demo data (used by ``manage.py seed``)."""

from __future__ import annotations

import factory
from factory.django import DjangoModelFactory

from example_project.shop.models import Note, Order, Product

ADJECTIVES = ["Red", "Quiet", "Sturdy", "Tiny", "Bright", "Swift", "Plain", "Lucky"]
NOUNS = ["Kettle", "Lamp", "Notebook", "Backpack", "Mug", "Umbrella", "Scarf", "Clock"]


def product_name(n: int) -> str:
    """Readable, unique names: "Red Kettle", "Quiet Lamp", ... "Red Kettle 2"."""
    adjective = ADJECTIVES[n % len(ADJECTIVES)]
    noun = NOUNS[(n // len(ADJECTIVES) + n) % len(NOUNS)]
    round_ = n // (len(ADJECTIVES) * len(NOUNS))
    return f"{adjective} {noun}" + (f" {round_ + 1}" if round_ else "")


class ProductFactory(DjangoModelFactory):
    class Meta:
        model = Product
        django_get_or_create = ("name",)

    name = factory.Sequence(product_name)
    price = factory.Faker(
        "pydecimal", left_digits=3, right_digits=2, min_value=2, max_value=250
    )
    stock = factory.Faker("random_int", min=3, max=40)


class OrderFactory(DjangoModelFactory):
    class Meta:
        model = Order

    product = factory.SubFactory(ProductFactory)
    quantity = factory.Faker("random_int", min=1, max=3)


class NoteFactory(DjangoModelFactory):
    class Meta:
        model = Note

    text = factory.Faker("sentence", nb_words=5)
