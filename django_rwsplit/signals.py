"""Signals sent when a replica leaves or rejoins the read rotation, and on retries."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

__all__ = [
    "primary_changed",
    "primary_fenced",
    "write_lost",
    "visibility_timed_out",
    "read_retried",
    "replica_ejected",
    "replica_readmitted",
    "send_robust",
]

logger = logging.getLogger("django_rwsplit")

# Sent with ``alias``, ``reason`` (str), ``kind`` (a
# :class:`~django_rwsplit.health.reasons.Reason` when a replica left, else
# None) and ``lag_seconds`` / ``lag_bytes`` (float / int, or None when
# unknown) on each transition only.
replica_ejected = Signal()
replica_readmitted = Signal()

# Sent with ``alias`` (the replica alias the read was routed to), ``reason``
# ("recovery_conflict", "server_shutdown", "connection_broken", or
# "read_only": the replica refused a write that then ran on the primary) and
# ``attempt`` (1 for the first retry) each time a failed autocommit read on a
# replica runs again elsewhere.
read_retried = Signal()

# Sent with ``alias`` (the primary alias), ``node`` (``host:port`` writes now
# go to), ``previous`` (the node they went to) and ``timeline`` when the
# health rounds find that the primary of a multi-host alias moved.
primary_changed = Signal()

# Sent with ``alias``, ``node`` (the writable node that gets no writes: an
# old primary on an older timeline, or a node of another system),
# ``timeline`` and ``primary`` (the node writes go to) when a round first
# finds two writable nodes; sent again if that set changes.
primary_fenced = Signal()

# Sent with ``cluster``, ``timeline`` and ``lsn`` (where a client's token says
# its write was made), ``primary_timeline`` and ``switch_point`` (past which
# that timeline's WAL is not the primary's) the first time this process sees a
# token of a write lost in a failover.
write_lost = Signal()

# Sent with ``cluster``, ``replicas`` (the aliases that had not applied the
# commit), ``lsn`` (the commit's position) and ``waited`` (seconds) when a
# commit made in visible_on_replicas() was not applied by every replica in
# rotation within VISIBLE_WAIT; those replicas serve no read until they have.
visibility_timed_out = Signal()


def send_robust(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """
    Send ``signal`` on the request path: a receiver that raises is logged.

    A failing receiver (metrics, an integration) must never turn a query
    that would succeed into an error.
    """
    for receiver, error in signal.send_robust(sender=sender, **kwargs):
        if isinstance(error, Exception):
            logger.error(
                "Receiver %r of a django_rwsplit signal failed: %s",
                receiver,
                error,
                exc_info=error,
            )
