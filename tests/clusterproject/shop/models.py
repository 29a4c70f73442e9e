from __future__ import annotations

from django.db import models


class Order(models.Model):
    """A row of the default cluster."""

    name = models.CharField(max_length=100)
