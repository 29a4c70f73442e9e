"""A custom backend built on Django's PostgreSQL one, as projects write them."""

from __future__ import annotations

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's PostgreSQL wrapper, unchanged."""
