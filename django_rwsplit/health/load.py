"""
This process's measure of each server's load, taken where its queries pass.

The engine's execute wrapper calls :func:`begin` and :func:`end` around each
query. Per server alias they keep the queries in flight and a peak-EWMA of
query latency: a slower response raises the average at once, faster ones
pull it down by :data:`SMOOTHING` of the gap, and with no new response it
decays back to a neutral figure (the health check's own query time, else
zero) within
a few :data:`DECAY_SECONDS`. There is no lock and no I/O: adding to or
discarding from a set is atomic in CPython, and two threads finishing at the
same instant can at worst lose one sample of an average.
"""

from __future__ import annotations

import math
import time
from typing import Any

__all__ = ["DECAY_SECONDS", "SMOOTHING", "ServerLoad", "begin", "end", "of", "reset"]

# Time constant of the decay back to neutral: after 3 s, 5 % of a spike is left.
DECAY_SECONDS = 1.0
# Weight of a response faster than the average (slower ones replace it).
SMOOTHING = 0.3


class ServerLoad:
    """One server's load as this process sees it."""

    __slots__ = ("inflight", "peak_ms", "sampled_at", "neutral_ms", "queries")

    def __init__(self) -> None:
        self.inflight: set[Any] = set()
        self.peak_ms: float | None = None
        self.sampled_at = 0.0
        # What the average decays to (set by the balancer from health checks).
        self.neutral_ms: float | None = None
        self.queries = 0

    @property
    def outstanding(self) -> int:
        """Queries of this process running on the server now."""
        return len(self.inflight)

    def latency_ms(self, now: float) -> float | None:
        """Return the average at ``now`` (perf_counter), decayed toward neutral."""
        peak = self.peak_ms
        neutral = self.neutral_ms
        if peak is None:
            return neutral
        if neutral is None:
            neutral = 0.0
        return neutral + (peak - neutral) * math.exp(
            (self.sampled_at - now) / DECAY_SECONDS
        )

    def sample(self, elapsed_ms: float, now: float) -> None:
        """Take one response time into the average."""
        current = self.latency_ms(now)
        if current is None or elapsed_ms >= current:
            self.peak_ms = elapsed_ms
        else:
            self.peak_ms = current + (elapsed_ms - current) * SMOOTHING
        self.sampled_at = now
        self.queries += 1


_loads: dict[str, ServerLoad] = {}


def of(alias: str) -> ServerLoad:
    """Return the load record of server ``alias`` (created on first use)."""
    load = _loads.get(alias)
    if load is None:
        load = _loads.setdefault(alias, ServerLoad())
    return load


def begin(alias: str, query: object) -> float:
    """Note that ``query`` (any hashable token) started on ``alias``."""
    of(alias).inflight.add(query)
    return time.perf_counter()


def end(alias: str, query: object, started: float, *, ok: bool = True) -> None:
    """Note that ``query`` returned; a successful one is a latency sample."""
    now = time.perf_counter()
    load = of(alias)
    load.inflight.discard(query)
    if ok:
        load.sample((now - started) * 1000.0, now)


def reset() -> None:
    """Forget every measurement (tests; a forked child starts afresh)."""
    _loads.clear()
