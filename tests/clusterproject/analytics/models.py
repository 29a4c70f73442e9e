from __future__ import annotations

from django.db import models


class Event(models.Model):
    """A row of the analytics cluster."""

    name = models.CharField(max_length=100)
