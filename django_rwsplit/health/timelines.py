"""
Timelines: which writes the primary's timeline holds, after a failover.

A promoted standby starts a new timeline at the position it had replayed (its
*switch point*); WAL the old primary wrote past that point is not on the new
timeline: with asynchronous replication, those writes were lost. The new
primary's history file (``pg_wal/<timeline>.history``) lists the switch
point of each ancestor timeline; reading it needs a superuser or
``pg_read_server_files``. Without it, the new primary's position when a
round first found it stands in: every write past it is surely lost (writes
between the real switch point and it are not detected).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django_rwsplit.health.pgwire import ProbeError, conninfo_from_settings, fetch_row
from django_rwsplit.health.probes import parse_lsn

__all__ = ["Lineage", "history_sql", "parse_history", "read_switch_points"]

logger = logging.getLogger("django_rwsplit")


def history_sql(timeline: int) -> str:
    """The query that reads timeline ``timeline``'s history file."""
    return f"SELECT pg_read_file('pg_wal/{timeline:08X}.history')"


def parse_history(text: str) -> dict[int, int]:
    """Each ancestor timeline's switch point, from a history file's text."""
    points: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            lsn = parse_lsn(parts[1])
            if lsn is not None:
                points[int(parts[0])] = lsn
    return points


def read_switch_points(
    settings_dict: Mapping[str, Any], timeline: int, timeout: float
) -> dict[int, int] | None:
    """The switch points of ``timeline``'s ancestors, or None if unreadable."""
    try:
        (text,) = fetch_row(
            conninfo_from_settings(settings_dict), history_sql(timeline), timeout
        )
    except (ProbeError, ValueError) as error:
        logger.info("Timeline %s's history could not be read: %s", timeline, error)
        return None
    return parse_history(text or "")


@dataclass
class Lineage:
    """What this process knows of its primary's timeline and its ancestors."""

    timeline: int | None = None
    # Ancestor timeline -> the position past which its WAL is not ours.
    switch_points: dict[int, int] = field(default_factory=dict)
    exact: bool = False
    _reported: set[tuple[int, int]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def moved(
        self, timeline: int, points: dict[int, int] | None, position: int | None
    ) -> None:
        """The primary is now on ``timeline``; ``points`` from its history file."""
        previous, self.timeline = self.timeline, timeline
        if points is not None:
            self.switch_points, self.exact = dict(points), True
        elif previous is not None and previous < timeline and position is not None:
            self.switch_points = {**self.switch_points, previous: position}
            self.exact = False

    def lost(self, timeline: int, lsn: int) -> int | None:
        """
        The switch point a write at ``lsn`` on ``timeline`` lies past, or None.

        None: the primary's timeline holds it, or this process cannot tell
        (``timeline`` is the current one, newer, or not an ancestor it knows).
        """
        current = self.timeline
        if current is None or timeline >= current:
            return None
        point = self.switch_points.get(timeline)
        if point is None or lsn <= point:
            return None
        return point

    def first_report(self, timeline: int, lsn: int) -> bool:
        """True the first time a lost write at (``timeline``, ``lsn``) is seen."""
        with self._lock:
            if (timeline, lsn) in self._reported:
                return False
            self._reported.add((timeline, lsn))
            return True
