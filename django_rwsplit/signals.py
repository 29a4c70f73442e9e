"""Signals sent when a replica leaves or rejoins the read rotation, and on retries."""

from __future__ import annotations

from django.dispatch import Signal

# Sent with ``alias``, ``reason`` (str), ``kind`` (a
# :class:`~django_rwsplit.health.reasons.Reason` when a replica left, else
# None) and ``lag_seconds`` / ``lag_bytes`` (float / int, or None when
# unknown) on each transition only.
replica_ejected = Signal()
replica_readmitted = Signal()

# Sent with ``alias`` (the replica alias the read was routed to), ``reason``
# ("recovery_conflict", "server_shutdown" or "connection_broken") and
# ``attempt`` (1 for the first retry) each time a failed autocommit read on a
# replica runs again elsewhere.
read_retried = Signal()
