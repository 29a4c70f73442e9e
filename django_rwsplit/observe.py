"""
Hooks for optional integrations (metrics), off until one installs an observer.

The router calls :data:`observer` once per read only when it is set, so the
Prometheus extra costs nothing when it is not installed.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    """What an integration receives."""

    def read(self, alias: str, reason: str | None) -> None:
        """A read was routed to ``alias``; ``reason`` says why it was pinned."""

    def pin(self, reason: str) -> None:
        """A request, block or task started reading from the primary."""


observer: Observer | None = None


def pin(reason: str) -> None:
    """Report that a pin to the primary began (write, cookie, pin_primary...)."""
    current = observer
    if current is not None:
        current.pin(reason)
