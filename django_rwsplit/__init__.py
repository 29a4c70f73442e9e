"""Read/write splitting for Django on PostgreSQL primaries and streaming replicas."""

from __future__ import annotations

from django_rwsplit.pinning import pin_primary

__all__ = ["pin_primary"]
__version__ = "0.1.0"
