"""
Tokens of writes lost in a failover: found, logged, counted, sent to the primary.

A read-your-writes token carries the timeline its position was written on.
When the primary's timeline does not hold that position (the write went to
an old primary past the point where the new one was promoted, see
:mod:`django_rwsplit.health.timelines`), the client's reads go to the
primary (no replica can show the write: it is gone), a WARNING is logged and
``write_lost`` is sent, once per lost position per process.
"""

from __future__ import annotations

import logging

from django_rwsplit import signals
from django_rwsplit.health.probes import format_lsn

__all__ = ["check"]

logger = logging.getLogger("django_rwsplit")


def check(cluster: str, timeline: int, lsn: int) -> bool:
    """Return True (and report it) when ``cluster``'s primary lacks the write."""
    from django_rwsplit.health import registry

    state = registry.current_of(cluster)
    if state is None:
        return False
    lineage = state.lineage
    point = lineage.lost(timeline, lsn)
    if point is None:
        return False
    if lineage.first_report(timeline, lsn):
        logger.warning(
            "A client's write at %s on timeline %s of cluster %r is not on the "
            "primary's timeline %s (it forked at %s%s): the write was possibly "
            "lost in a failover; the client reads from the primary.",
            format_lsn(lsn),
            timeline,
            cluster,
            lineage.timeline,
            format_lsn(point),
            "" if lineage.exact else ", or earlier",
        )
        signals.send_robust(
            signals.write_lost,
            sender=None,
            cluster=cluster,
            timeline=timeline,
            lsn=lsn,
            primary_timeline=lineage.timeline,
            switch_point=point,
        )
    return True
