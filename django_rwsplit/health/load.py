"""
This process's measure of each server's load, taken where its queries pass.

The engine's execute wrapper calls :meth:`ServerLoad.begin` and
:meth:`ServerLoad.end` around each query. Per server alias they keep the
queries in flight and a peak-EWMA of query latency: slower responses raise
the average at once (a single one alone, halfway), faster ones pull it down
by :data:`SMOOTHING` of the gap, and with no new response it decays back to
a neutral figure (the median of the last health checks' query times,
else zero) within a few
:data:`DECAY_SECONDS`. A replica's cost is that latency times its load
(:meth:`ServerLoad.cost`).

:func:`judge` renews :data:`penalised`, the replicas in rotation whose cost is
clearly above the cheapest one's; finishing queries call it at most every
:data:`JUDGE_EVERY` seconds and each health round calls it, so the adaptive
balancer reads one set per pick. There is no lock and no I/O: adding to or
discarding from a set is atomic in CPython, sets are replaced whole, and two
threads finishing at the same instant can at worst lose one sample.
"""

from __future__ import annotations

import math
import time
from typing import Any

__all__ = [
    "DECAY_SECONDS",
    "SMOOTHING",
    "ServerLoad",
    "CHECK_WINDOW",
    "CLEARLY_CHEAPER",
    "SLACK_MS",
    "begin",
    "end",
    "judge",
    "of",
    "penalised",
    "reset",
    "take_check",
]

# Time constant of the decay back to neutral: after 3 s, 5 % of a spike is left.
DECAY_SECONDS = 1.0
# Weight of a response faster than the average (slower ones replace it).
SMOOTHING = 0.3
_RATE = 1.0 / DECAY_SECONDS
# A replica is *penalised* when its cost is more than CLEARLY_CHEAPER times
# the cheapest replica's plus SLACK_MS (cost units: ms x load), so equally
# loaded replicas, whose costs differ by noise, are never told apart.
CLEARLY_CHEAPER = 1.5
SLACK_MS = 2.0
# The verdict is renewed at most this often (seconds) by finishing queries,
# and once per health round.
JUDGE_EVERY = 0.001
# How many of the last health checks' query times the neutral figure is the
# median of (see :func:`take_check`).
CHECK_WINDOW = 3


class ServerLoad:
    """One server's load as this process sees it."""

    __slots__ = (
        "inflight",
        "peak_ms",
        "sampled_at",
        "neutral_ms",
        "active_backends",
        "queries",
        "slow_before",
        "checks",
    )

    def __init__(self) -> None:
        self.inflight: set[Any] = set()
        self.peak_ms: float | None = None
        self.sampled_at = 0.0
        # From the last health check (see :func:`take_check`): what the
        # average decays to, and the other sessions running a query there.
        self.neutral_ms: float | None = None
        self.active_backends = 0
        self.queries = 0
        # Whether the last answer was slower than the average before it.
        self.slow_before = False
        # The last CHECK_WINDOW health checks' query times, oldest first.
        self.checks: tuple[float, ...] = ()

    @property
    def outstanding(self) -> int:
        """Queries of this process running on the server now."""
        return len(self.inflight)

    def latency_ms(self, now: float) -> float | None:
        """Return the average at ``now`` (perf_counter), decayed toward neutral."""
        peak = self.peak_ms
        if peak is None:
            return self.neutral_ms
        age = now - self.sampled_at
        if age <= 0.0:
            return peak
        neutral = self.neutral_ms or 0.0
        return neutral + (peak - neutral) * math.exp(-age * _RATE)

    def cost(self, now: float) -> float:
        """
        Return latency x load: what a read here is expected to cost now.

        Load is 1 + this process's queries in flight + the other sessions
        the last health check saw active (every process's queries).
        """
        latency = self.latency_ms(now) or 0.0
        return latency * (1 + len(self.inflight) + self.active_backends)

    def sample(self, elapsed_ms: float, now: float) -> None:
        """Take one response time into the average."""
        peak = self.peak_ms
        if peak is not None:
            age = now - self.sampled_at
            if age > 0.0:
                neutral = self.neutral_ms or 0.0
                peak = neutral + (peak - neutral) * math.exp(-age * _RATE)
        if peak is None or (elapsed_ms >= peak and self.slow_before):
            self.peak_ms = elapsed_ms
        elif elapsed_ms >= peak:
            # One slow answer alone (a scheduling hiccup) moves the average
            # halfway; a second in a row takes it all the way.
            self.peak_ms = peak + (elapsed_ms - peak) * 0.5
        else:
            self.peak_ms = peak + (elapsed_ms - peak) * SMOOTHING
        self.slow_before = peak is not None and elapsed_ms >= peak
        self.sampled_at = now
        self.queries += 1

    def begin(self, query: object) -> float:
        """Note that ``query`` (any hashable token) started here; return the time."""
        self.inflight.add(query)
        return time.perf_counter()

    def end(self, query: object, started: float, ok: bool = True) -> None:
        """Note that ``query`` returned; a successful one is a latency sample."""
        now = time.perf_counter()
        self.inflight.discard(query)
        if ok:
            self.sample((now - started) * 1000.0, now)
        if now - _judged_at >= JUDGE_EVERY:
            judge(now)


_loads: dict[str, ServerLoad] = {}


def of(alias: str) -> ServerLoad:
    """Return the load record of server ``alias`` (created on first use)."""
    load = _loads.get(alias)
    if load is None:
        load = _loads.setdefault(alias, ServerLoad())
    return load


# Replicas in rotation (set each health round) and those clearly costlier
# than the cheapest of them now: replaced whole, read without a lock.
# The replicas in rotation of each cluster, by cluster name (replaced, never
# changed in place: readers need no lock).
_groups: dict[str, frozenset[str]] = {}
penalised: frozenset[str] = frozenset()
_judged_at = 0.0


def judge(
    now: float, members: frozenset[str] | None = None, cluster: str = "default"
) -> frozenset[str]:
    """
    Renew :data:`penalised`; ``members`` are ``cluster``'s replicas in rotation.

    Each cluster's replicas are compared with each other only; without
    ``members`` every cluster is judged again with its last members.
    """
    global _groups, penalised, _judged_at
    if members is not None and _groups.get(cluster) != members:
        _groups = {**_groups, cluster: members}
    _judged_at = now
    found: set[str] = set()
    for group in _groups.values():
        if len(group) < 2:
            continue
        costs = {alias: of(alias).cost(now) for alias in group}
        limit = CLEARLY_CHEAPER * min(costs.values()) + SLACK_MS
        found.update(alias for alias, cost in costs.items() if cost > limit)
    penalised = frozenset(found)
    return penalised


def begin(alias: str, query: object) -> float:
    """Note that ``query`` (any hashable token) started on ``alias``."""
    return of(alias).begin(query)


def end(alias: str, query: object, started: float, *, ok: bool = True) -> None:
    """Note that ``query`` returned; a successful one is a latency sample."""
    of(alias).end(query, started, ok)


def take_check(alias: str, query_ms: float | None, active: int | None) -> None:
    """
    Take a health check's view of ``alias``'s load (called once per round).

    The neutral figure is the median of the last :data:`CHECK_WINDOW` check
    times (the lower middle of two), so one slow check (a scheduling
    hiccup, a cold cache after a restart) cannot penalise a replica for a
    whole round; two in a row do.
    """
    server = of(alias)
    if query_ms is not None:
        server.checks = (*server.checks[1 - CHECK_WINDOW :], query_ms)
        ordered = sorted(server.checks)
        server.neutral_ms = ordered[(len(ordered) - 1) // 2]
    server.active_backends = active or 0


def reset() -> None:
    """Forget every measurement (tests; a forked child starts afresh)."""
    global _groups, penalised, _judged_at
    _loads.clear()
    _groups = {}
    penalised = frozenset()
    _judged_at = 0.0
