"""factory-boy factories for the demo data (used by ``manage.py seed``)."""

# factory-boy's declarations are untyped callables.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from factory.declarations import Sequence, SubFactory
from factory.django import DjangoModelFactory
from factory.faker import Faker

from example_project.shop.models import Note, Order, Product

ADJECTIVES = ["Red", "Quiet", "Sturdy", "Tiny", "Bright", "Swift", "Plain", "Lucky"]
NOUNS = ["Kettle", "Lamp", "Notebook", "Backpack", "Mug", "Umbrella", "Scarf", "Clock"]


def product_name(n: int) -> str:
    """Readable, unique names: "Red Kettle", "Quiet Lamp", ... "Red Kettle 2"."""
    adjective = ADJECTIVES[n % len(ADJECTIVES)]
    noun = NOUNS[(n // len(ADJECTIVES) + n) % len(NOUNS)]
    round_ = n // (len(ADJECTIVES) * len(NOUNS))
    return f"{adjective} {noun}" + (f" {round_ + 1}" if round_ else "")


class ProductFactory(DjangoModelFactory[Product]):
    class Meta:
        model = Product
        django_get_or_create = ("name",)

    name = Sequence(product_name)
    price = Faker(
        "pydecimal", left_digits=3, right_digits=2, min_value=2, max_value=250
    )
    stock = Faker("random_int", min=3, max=40)


class OrderFactory(DjangoModelFactory[Order]):
    class Meta:
        model = Order

    product = SubFactory(ProductFactory)
    quantity = Faker("random_int", min=1, max=3)


class NoteFactory(DjangoModelFactory[Note]):
    class Meta:
        model = Note

    text = Faker("sentence", nb_words=5)
