"""
Wait until replicas have replayed a position (``visible_on_replicas``).

Each pending replica is asked ``pg_last_wal_replay_lsn()`` over a connection
of its own (not Django's), all at once, each within ``CHECK_TIMEOUT`` and
the overall deadline; again, a few milliseconds later, until every one has
the position or the deadline passes. A hung or dead replica costs the wait,
never more: it is then reported as missing.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from django_rwsplit.health.daemon_pool import DaemonPool
from django_rwsplit.health.pgwire import ProbeError, conninfo_from_settings, fetch_row
from django_rwsplit.health.probes import parse_lsn

__all__ = ["REPLAY_SQL", "Waited", "replayed_position", "wait_replayed"]

REPLAY_SQL = "SELECT pg_last_wal_replay_lsn()::text"
# Between two asks of the replicas still behind: short first, then longer.
FIRST_PAUSE = 0.002
LONGEST_PAUSE = 0.02


@dataclass(frozen=True)
class Waited:
    """How a wait ended: who applied the position, who had not by the deadline."""

    lsn: int
    applied: tuple[str, ...]
    missing: tuple[str, ...]
    seconds: float


def replayed_position(settings_dict: Mapping[str, Any], timeout: float) -> int | None:
    """A replica's replay position, or None when it gave none within ``timeout``."""
    try:
        (text,) = fetch_row(conninfo_from_settings(settings_dict), REPLAY_SQL, timeout)
    except (ProbeError, ValueError):
        return None
    try:
        return parse_lsn(text)
    except ValueError:
        return None


def wait_replayed(
    lsn: int,
    aliases: Collection[str],
    databases: Mapping[str, Mapping[str, Any]],
    *,
    deadline: float,
    check_timeout: float,
) -> Waited:
    """Wait until each of ``aliases`` replayed ``lsn``, or ``deadline`` passed."""
    started = time.monotonic()
    pending = sorted(aliases)
    applied: list[str] = []
    pause = FIRST_PAUSE
    with DaemonPool(max(1, len(pending))) as pool:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            timeout = min(left, check_timeout)

            def ask(alias: str, timeout: float = timeout) -> int | None:
                return replayed_position(databases[alias], timeout)

            positions = list(pool.map(ask, pending))
            answers = zip(pending, positions, strict=True)
            done = [alias for alias, at in answers if at is not None and at >= lsn]
            applied += done
            pending = [alias for alias in pending if alias not in done]
            if pending:
                time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
                pause = min(pause * 2, LONGEST_PAUSE)
    return Waited(lsn, tuple(applied), tuple(pending), time.monotonic() - started)
