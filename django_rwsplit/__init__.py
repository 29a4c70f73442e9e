"""Read/write splitting for Django on PostgreSQL primaries and streaming replicas."""

from __future__ import annotations

from django_rwsplit.pinning import pin_primary
from django_rwsplit.visibility import visible_on_replicas

__all__ = ["pin_primary", "visible_on_replicas"]
__version__ = "0.1.0"
