"""Deprecated name of :mod:`django_rwsplit.health.registry` (kept for imports)."""

from __future__ import annotations

import warnings
from typing import Any

from django_rwsplit.health import registry

warnings.warn(
    "django_rwsplit.health.state is now django_rwsplit.health.registry",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    # Forwarded on each access: the registry's globals change as it starts.
    return getattr(registry, name)
