from __future__ import annotations

from django.db import models
from django.utils import timezone


class Product(models.Model):
    name = models.CharField(max_length=100, unique=True)
    price = models.DecimalField(max_digits=8, decimal_places=2)
    stock = models.PositiveIntegerField(default=0)

    objects: models.Manager[Product] = models.Manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="orders"
    )
    quantity = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[Order] = models.Manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Order #{self.pk}: {self.quantity} x {self.product}"


class Note(models.Model):
    """A row written by ``POST /api/write/`` and read back by ``/api/read/<id>/``."""

    text = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[Note] = models.Manager()

    def __str__(self) -> str:
        return f"Note #{self.pk}"
