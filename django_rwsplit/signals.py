"""Signals sent when a replica leaves or rejoins the read rotation."""

from __future__ import annotations

from django.dispatch import Signal

# Sent with ``alias``, ``reason`` (str) and ``lag_seconds`` / ``lag_bytes``
# (float / int, or None when unknown) on each transition only.
replica_ejected = Signal()
replica_readmitted = Signal()
