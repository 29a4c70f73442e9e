"""
The per-read event channel: listeners that hear of each routed read and pin.

Rotation changes and retries are Django signals (:mod:`django_rwsplit.signals`);
the events here happen once per query, too often for a signal, so they go to
a plain tuple of listeners that the router walks only when it is not empty.
Metrics subscribe here; so may any integration.
"""

from __future__ import annotations

import sys
import threading
from typing import Protocol

from django_rwsplit import forks


class Observer(Protocol):
    """What a listener receives."""

    def read(self, alias: str, reason: str | None) -> None:
        """A read was routed to ``alias``; ``reason`` says why it was pinned."""

    def pin(self, reason: str) -> None:
        """A request, block or task started reading from the primary."""

    # Optional: def served_by(self, alias: str, server: str) -> None, a query
    # routed to ``alias`` answered by the substitute ``server`` (failover).


# Replaced, never mutated, so the router can walk it without a lock.
listeners: tuple[Observer, ...] = ()
_lock = threading.Lock()
forks.renew_after_fork(sys.modules[__name__])


def subscribe(listener: Observer) -> None:
    """Send ``listener`` every later event (once, however often subscribed)."""
    global listeners
    with _lock:
        if not any(current is listener for current in listeners):
            listeners = (*listeners, listener)


def unsubscribe(listener: Observer) -> None:
    """Stop sending events to ``listener`` (harmless when it was not subscribed)."""
    global listeners
    with _lock:
        listeners = tuple(current for current in listeners if current is not listener)


def read(alias: str, reason: str | None) -> None:
    """Report a routed read."""
    for listener in listeners:
        listener.read(alias, reason)


def served_by(alias: str, server: str) -> None:
    """Report a query routed to ``alias`` that substitute ``server`` answered."""
    for listener in listeners:
        method = getattr(listener, "served_by", None)
        if method is not None:
            method(alias, server)


def pin(reason: str) -> None:
    """Report that a pin to the primary began (write, cookie, pin_primary...)."""
    for listener in listeners:
        listener.pin(reason)
