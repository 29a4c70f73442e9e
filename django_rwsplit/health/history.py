"""
Recent health rounds of this process, for the status page's charts.

Each sample holds a replica's lag and place in rotation at one round, and
this process's queries on it since the previous round with their latency
average (:mod:`~django_rwsplit.health.load`): the share of reads chart.

A bounded in-memory ring of per-replica samples. :func:`record` takes a
:class:`~django_rwsplit.health.tracker.HealthSnapshot` and keeps it only when
it holds a round newer than the last one kept, so calling it for every
round (from the health monitor) and for every status request is harmless.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from django_rwsplit import forks
from django_rwsplit.conf import DEFAULT_CLUSTER
from django_rwsplit.health import load
from django_rwsplit.health.tracker import HealthSnapshot

__all__ = ["WINDOW_SECONDS", "Sample", "clear", "reads_summary", "record", "samples"]

WINDOW_SECONDS = 300.0
# Rounds kept at most: five minutes at a CHECK_INTERVAL of 0.1 s.
MAX_ROUNDS = 3000


@dataclass(frozen=True)
class Sample:
    """One replica at one health round."""

    t: float
    alias: str
    lag_seconds: float | None
    in_rotation: bool
    queries: int = 0
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON shape used by the status page."""
        return {
            "t": round(self.t, 3),
            "alias": self.alias,
            "lag_seconds": self.lag_seconds,
            "in_rotation": self.in_rotation,
            "queries": self.queries,
            "latency_ms": None
            if self.latency_ms is None
            else round(self.latency_ms, 3),
        }


def round_time(snapshot: HealthSnapshot) -> float | None:
    """Return when the round behind ``snapshot`` was measured (None: never)."""
    times = [r.checked_at for r in snapshot.replicas if r.checked_at is not None]
    if snapshot.primary is not None:
        times.append(snapshot.primary.checked_at)
    return max(times) if times else None


class History:
    """A thread-safe ring of rounds, each a tuple of :class:`Sample`."""

    def __init__(self, max_rounds: int = MAX_ROUNDS) -> None:
        self._lock = threading.Lock()
        forks.renew_after_fork(self)
        self._rounds: deque[tuple[float, tuple[Sample, ...]]] = deque(maxlen=max_rounds)
        self._queries_before: dict[str, int] = {}

    def record(self, snapshot: HealthSnapshot | None) -> bool:
        """Keep ``snapshot`` if it is a newer round; return whether it was kept."""
        if snapshot is None:
            return False
        at = round_time(snapshot)
        if at is None:
            return False
        with self._lock:
            if self._rounds and at <= self._rounds[-1][0]:
                return False
            now = time.perf_counter()
            row = []
            for status in snapshot.replicas:
                server = load.of(status.alias)
                queries = server.queries
                before = self._queries_before.get(status.alias, queries)
                self._queries_before[status.alias] = queries
                row.append(
                    Sample(
                        t=status.checked_at if status.checked_at is not None else at,
                        alias=status.alias,
                        lag_seconds=status.lag_seconds,
                        in_rotation=status.in_rotation,
                        queries=max(0, queries - before),
                        latency_ms=server.latency_ms(now),
                    )
                )
            self._rounds.append((at, tuple(row)))
            self._prune(at)
        return True

    def _prune(self, now: float) -> None:
        horizon = now - WINDOW_SECONDS
        while self._rounds and self._rounds[0][0] < horizon:
            self._rounds.popleft()

    def samples(self, seconds: float = WINDOW_SECONDS) -> list[Sample]:
        """Return the samples of the last ``seconds``, oldest first."""
        horizon = time.time() - seconds
        with self._lock:
            return [
                sample for at, row in self._rounds if at >= horizon for sample in row
            ]

    def clear(self) -> None:
        """Forget every round."""
        with self._lock:
            self._rounds.clear()
            self._queries_before.clear()


_history = History()


# The other clusters' histories (RWSPLIT["CLUSTERS"]), by name.
_others: dict[str, History] = {}


def _of(cluster: str | None) -> History:
    if cluster is None or cluster == DEFAULT_CLUSTER:
        return _history
    found = _others.get(cluster)
    if found is None:  # setdefault is atomic: two threads get one History
        found = _others.setdefault(cluster, History())
    return found


def record(snapshot: HealthSnapshot | None, cluster: str | None = None) -> bool:
    """Add ``snapshot`` to the history of ``cluster`` (default) if it is new."""
    return _of(cluster).record(snapshot)


def samples(
    seconds: float = WINDOW_SECONDS, cluster: str | None = None
) -> list[Sample]:
    """Return the samples of ``cluster`` (default) of the last ``seconds``."""
    return _of(cluster).samples(seconds)


def reads_summary(window: list[Sample]) -> dict[str, dict[str, Any]]:
    """
    Return each replica's share of this process's queries over ``window``.

    With the query-weighted mean of the latency average at each round: the
    figures the status page shows beside the lag chart, over the same samples.
    """
    queries: dict[str, int] = {}
    weighted: dict[str, float] = {}
    for sample in window:
        queries[sample.alias] = queries.get(sample.alias, 0) + sample.queries
        if sample.latency_ms is not None and sample.queries:
            weighted[sample.alias] = (
                weighted.get(sample.alias, 0.0) + sample.latency_ms * sample.queries
            )
    total = sum(queries.values())
    return {
        alias: {
            "queries": count,
            "share": count / total if total else None,
            "latency_ms": weighted[alias] / count if alias in weighted else None,
        }
        for alias, count in queries.items()
    }


def clear() -> None:
    """Forget this process's history (tests; a new configuration)."""
    _history.clear()
    for other in list(_others.values()):
        other.clear()
