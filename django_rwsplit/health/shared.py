"""
Rounds shared through a Django cache (``HEALTH_CACHE``): one measurer per cluster.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from psycopg.conninfo import conninfo_to_dict

from django_rwsplit.conf import Config
from django_rwsplit.health.deadline import call_within
from django_rwsplit.health.pgwire import conninfo_from_settings
from django_rwsplit.health.probes import PrimaryStatus, ReplicaReading
from django_rwsplit.health.tracker import HealthSnapshot, ReplicaStatus

logger = logging.getLogger("django_rwsplit")

Readings = tuple[PrimaryStatus, list[ReplicaReading]]
_T = TypeVar("_T")
_D = TypeVar("_D", PrimaryStatus, ReplicaReading, ReplicaStatus)


ROUND_FORMAT = 3  # bumped whenever the shared round's shape changes


@dataclass(frozen=True)
class SharedVerdict:
    """The measuring process's own verdict on its latest shared round."""

    snapshot: HealthSnapshot
    measured_by: str  # "host pid"
    round_id: str


def cluster_identity(config: Config, databases: Mapping[str, Mapping[str, Any]]) -> str:
    """
    Return a short digest naming this cluster: every alias, endpoint and database.

    Two deployments sharing a cache, or a deploy that moves a replica to
    another host, get different keys, so no process applies readings that
    were taken of other servers.
    """
    parts = []
    for alias in (config.primary, *config.replicas):
        # What the probes connect to (the password aside: not a key's business).
        params = conninfo_to_dict(conninfo_from_settings(databases[alias]))
        params.pop("password", None)
        parts.append(f"{alias}|{sorted(params.items())}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class SharedRounds:
    """
    Share rounds through a Django cache so one process measures for the fleet.

    The process holding the lock key (taken with ``add``, kept alive by each
    round it measures) measures every interval and stores its round; the
    others read it. Keys carry the cluster's identity and the round format.

    A stored round is fresh while its id changed within the last three
    intervals by *this* process's clock (another host's clock is never
    trusted) and the cache still holds it (it expires three intervals after
    it was written). Otherwise, or when it does not decode, or when a cache
    call fails or outlives ``CHECK_TIMEOUT`` (each runs with a deadline),
    this process measures for itself; a new holder takes the lock once it
    expires.
    """

    def __init__(
        self,
        cache_alias: str,
        interval: float,
        timeout: float = 1.0,
        identity: str = "default",
    ) -> None:
        from django.core.cache import caches

        self.cache = caches[cache_alias]
        self.cache_alias = cache_alias
        self.interval = interval
        self.timeout = timeout
        prefix = f"django_rwsplit:health:v{ROUND_FORMAT}:{identity}"
        self.lock_key = f"{prefix}:lock"
        self.round_key = f"{prefix}:round"
        self.verdict_key = f"{prefix}:verdict"
        self.owner = f"{os.getpid()}:{id(self)}"
        # Django's cache timeouts are whole seconds on some backends (Redis).
        self.lock_ttl = max(1, math.ceil(3 * interval))
        self.measured = 0
        self.borrowed = 0
        # The last round id seen, and when (time.monotonic()) it first was.
        self.seen_id: Any = None
        self.seen_at = -math.inf
        self._warned: set[str] = set()

    @classmethod
    def of_cluster(
        cls, config: Config, databases: Mapping[str, Mapping[str, Any]]
    ) -> SharedRounds | None:
        """The shared rounds of ``config``'s cluster (None without HEALTH_CACHE)."""
        if not config.health_cache:
            return None
        return cls(
            config.health_cache,
            config.check_interval,
            config.check_timeout,
            cluster_identity(config, databases),
        )

    def _call(self, func: Callable[[], _T]) -> _T:
        # One call in flight per instance: the monitor's and a command's
        # (replica_health in the same process) never refuse each other.
        return call_within(f"cache:{self.cache_alias}:{self.owner}", self.timeout, func)

    def _warn_once(self, what: str, exc: BaseException) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning("%s; measuring locally: %s", what, exc)

    def get(
        self, measure_now: Callable[[], Readings]
    ) -> tuple[Readings, Any, float] | None:
        """
        Return a fresh round, its id and when it was measured or arrived.

        The time is ``time.monotonic()``: when this process began measuring,
        or first saw the borrowed round.
        """
        try:
            elected = self._call(
                lambda: (
                    self.cache.add(self.lock_key, self.owner, timeout=self.lock_ttl)
                    or self.cache.get(self.lock_key) == self.owner
                )
            )
            stored = (
                None if elected else self._call(lambda: self.cache.get(self.round_key))
            )
        except Exception as exc:  # noqa: BLE001 - a cache outage must not stop checks
            self._warn_once("Health cache unavailable", exc)
            started = time.monotonic()
            return (*self._measure(measure_now), started)
        borrowed = self._borrow(stored)
        if borrowed is not None:
            return borrowed
        started = time.monotonic()
        (primary, readings), round_id = self._measure(measure_now)
        payload = {
            "id": round_id,
            "at": time.time(),
            "primary": asdict(primary),
            "replicas": [asdict(reading) for reading in readings],
        }
        try:
            self._call(
                lambda: self.cache.set(self.round_key, payload, timeout=self.lock_ttl)
            )
            if elected:
                self._call(
                    lambda: self.cache.touch(self.lock_key, timeout=self.lock_ttl)
                )
        except Exception as exc:  # noqa: BLE001
            self._warn_once("Could not share the health round", exc)
        return (primary, readings), round_id, started

    def owns(self, round_id: Any) -> bool:
        """Return whether this process measured the round ``round_id``."""
        return isinstance(round_id, str) and round_id.startswith(f"{self.owner}:")

    def publish_verdict(self, round_id: str, snapshot: HealthSnapshot) -> None:
        """Store this process's verdict on its round ``round_id`` for the fleet."""
        payload = {
            "id": round_id,
            "by": f"{socket.gethostname()} {os.getpid()}",
            "snapshot": encode_snapshot(snapshot),
        }
        try:
            self._call(
                lambda: self.cache.set(self.verdict_key, payload, timeout=self.lock_ttl)
            )
        except Exception as exc:  # noqa: BLE001
            self._warn_once("Could not share the health verdict", exc)

    def shared_verdict(self, after: Any = None) -> SharedVerdict | None:
        """
        Wait for a verdict on a new round; None if none comes in three intervals.

        A verdict counts only once its round id is seen to change (after
        ``after``, or after the first one read), by this process's clock, as
        for rounds; the wait is ``3 * CHECK_INTERVAL + 2 * CHECK_TIMEOUT``, at
        least 2 s. Each cache call has the ``CHECK_TIMEOUT`` deadline.
        """
        wait = max(2.0, 3 * self.interval + 2 * self.timeout)
        deadline = time.monotonic() + wait
        seen = after
        first = True
        while True:
            try:
                stored = self._call(lambda: self.cache.get(self.verdict_key))
            except Exception as exc:  # noqa: BLE001 - report, then measure locally
                self._warn_once("Health cache unavailable", exc)
                return None
            current = stored.get("id") if isinstance(stored, Mapping) else None
            if first and after is None:
                seen = current
            elif current is not None and current != seen:
                assert isinstance(stored, Mapping)
                try:
                    snapshot = decode_snapshot(stored["snapshot"])
                except Exception as exc:  # noqa: BLE001 - another version's
                    self._warn_once("A shared health verdict did not decode", exc)
                    return None
                return SharedVerdict(snapshot, str(stored.get("by", "?")), current)
            first = False
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(0.05, self.interval / 4))

    def _measure(self, measure_now: Callable[[], Readings]) -> tuple[Readings, str]:
        got = measure_now()
        self.measured += 1
        return got, f"{self.owner}:{self.measured}"

    def _borrow(self, stored: Any) -> tuple[Readings, Any, float] | None:
        """Return the stored round if it is fresh and decodes, else None."""
        if not isinstance(stored, Mapping) or "id" not in stored:
            return None
        now = time.monotonic()
        if stored["id"] != self.seen_id:
            self.seen_id, self.seen_at = stored["id"], now
        if now - self.seen_at > 3 * self.interval:
            return None
        try:
            decoded = decode_round(stored)
        except Exception as exc:  # noqa: BLE001 - another version's round
            self._warn_once("A shared health round did not decode", exc)
            return None
        self.borrowed += 1
        return decoded, stored["id"], self.seen_at


def decode_round(payload: Mapping[str, Any]) -> Readings:
    """Decode a stored round; unknown fields are ignored, missing ones raise."""
    return (
        _build(PrimaryStatus, payload["primary"]),
        [_build(ReplicaReading, reading) for reading in payload["replicas"]],
    )


def encode_snapshot(snapshot: HealthSnapshot) -> dict[str, Any]:
    """Return ``snapshot`` as plain data for the cache."""
    return {
        "primary": asdict(snapshot.primary) if snapshot.primary else None,
        "replicas": [asdict(status) for status in snapshot.replicas],
        "taken_at": snapshot.taken_at,
        "stale_after_seconds": snapshot.stale_after_seconds,
    }


def decode_snapshot(payload: Mapping[str, Any]) -> HealthSnapshot:
    """Decode :func:`encode_snapshot`'s data; unknown fields are ignored."""
    primary = payload["primary"]
    return HealthSnapshot(
        primary=_build(PrimaryStatus, primary) if primary is not None else None,
        replicas=tuple(_build(ReplicaStatus, entry) for entry in payload["replicas"]),
        taken_at=float(payload["taken_at"]),
        round_age_seconds=0.0,
        stale_after_seconds=payload.get("stale_after_seconds"),
    )


def _build(kind: type[_D], values: Mapping[str, Any]) -> _D:
    known = {f.name for f in fields(kind)}
    return kind(**{key: value for key, value in values.items() if key in known})
