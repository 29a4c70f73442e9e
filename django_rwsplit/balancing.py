"""
The balancers: how the replicas in rotation are ordered for a read.

:mod:`django_rwsplit.planner` decides where a read goes; for an unpinned read
it takes the balancer's order (:data:`BALANCERS`) over the rotation. Also
here: whether the test runner made the replicas mirrors of the primary.
"""

from __future__ import annotations

import time
from typing import Protocol

from django.db import connections

from django_rwsplit.conf import Config
from django_rwsplit.health import load
from django_rwsplit.health.rotation import Rotation, smooth_weighted_sequence

__all__ = [
    "BALANCERS",
    "AdaptiveBalancer",
    "Balancer",
    "RoundRobinBalancer",
    "acting_as_test_mirror",
    "Rotation",
    "cost",
    "mirrors_active",
    "remember_database_names",
    "smooth_weighted_sequence",
]


class Balancer(Protocol):
    """Orders the replicas in rotation for a read."""

    def pick(self, rotation: Rotation) -> str | None:
        """Return the replica for a new scope's first read (None: none in rotation)."""

    def candidates(self, rotation: Rotation) -> list[str]:
        """Return every replica in rotation once, the preferred first."""


class RoundRobinBalancer:
    """Smooth weighted round-robin: a fixed order, whatever the load."""

    def pick(self, rotation: Rotation) -> str | None:
        return rotation.pick()

    def candidates(self, rotation: Rotation) -> list[str]:
        return rotation.candidates()


def cost(alias: str, now: float) -> float:
    """
    Return what a read on ``alias`` is expected to cost now (lower is better).

    Latency (this process's peak-EWMA, decaying to the health check's query
    time) times the load: 1 + this process's queries in flight there + the
    other sessions the last health check saw active on it (every process's).
    See :meth:`~django_rwsplit.health.load.ServerLoad.cost`.
    """
    return load.of(alias).cost(now)


class AdaptiveBalancer:
    """
    Two candidates: the round-robin's next replica and a random other.

    The second, drawn by weight among the other replicas in rotation, serves
    when the first is *penalised*: its :func:`cost` is clearly above the
    cheapest replica's (:func:`~django_rwsplit.health.load.judge`, renewed
    by finishing queries at most every millisecond and by each health round,
    so a pick reads one set) and the second's is not. With one replica in
    rotation no choice is made.
    """

    def pick(self, rotation: Rotation) -> str | None:
        first = rotation.pick()
        if first is None or first not in load.penalised:
            return first
        return self.instead_of(rotation, first)

    @staticmethod
    def instead_of(rotation: Rotation, first: str) -> str:
        """Return the replica to read from when ``first`` is penalised."""
        penalised = load.penalised
        second = rotation.random_other(first)
        if second is None or second not in penalised:
            return second or first
        # Both drawn are penalised (three replicas or more): any that is not.
        return next((a for a in rotation.weights if a not in penalised), first)

    def candidates(self, rotation: Rotation) -> list[str]:
        now = time.perf_counter()
        # sorted() is stable: equal costs keep the round-robin order.
        return sorted(rotation.candidates(), key=lambda alias: cost(alias, now))


BALANCERS: dict[str, Balancer] = {
    "adaptive": AdaptiveBalancer(),
    "round_robin": RoundRobinBalancer(),
}


_startup_names: dict[str, object] = {}


def remember_database_names() -> None:
    """Note each database NAME at start-up, before a test runner renames them."""
    for alias, settings_dict in connections.settings.items():
        _startup_names.setdefault(alias, settings_dict.get("NAME"))


def mirrors_active(config: Config) -> bool:
    """
    Return whether Django's test runner has made the replicas test mirrors.

    ``setup_databases`` points a replica whose ``TEST["MIRROR"]`` names the
    primary at the primary's test database by changing its NAME. Such a
    replica is a separate connection that cannot see the test's uncommitted
    writes, so while that is the case (and ``ROUTE_TEST_MIRRORS_TO_PRIMARY``
    is on) reads go to the primary.
    """
    # The runner renames every mirror at once: the first replica tells. (Kept
    # inline: this runs for every unpinned read while mirrors are routed.)
    for alias in config.replicas:
        name = connections.settings[alias].get("NAME")
        return bool(name != _startup_names.get(alias, name))
    return False


def acting_as_test_mirror(alias: str) -> bool:
    """Whether the test runner has renamed ``alias``'s database (a test mirror)."""
    name = connections.settings[alias].get("NAME")
    return bool(name != _startup_names.get(alias, name))
