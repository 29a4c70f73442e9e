"""Measure the primary and replicas in rounds, optionally sharing one measurer."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from psycopg.conninfo import conninfo_to_dict

from django_rwsplit.conf import Config
from django_rwsplit.health.deadline import call_within
from django_rwsplit.health.pgwire import conninfo_from_settings, describe_endpoint
from django_rwsplit.health.probes import (
    PrimaryStatus,
    Probe,
    ReplicaReading,
    probe_for,
)
from django_rwsplit.health.tracker import HealthSnapshot, ReplicaStatus, Tracker

logger = logging.getLogger("django_rwsplit")

Round = tuple[PrimaryStatus, list[ReplicaReading]]


def measure(
    config: Config,
    databases: Mapping[str, Mapping[str, Any]],
    probe: Probe | None = None,
    pool: DaemonPool | None = None,
) -> Round:
    """
    Measure the primary, then every replica at once, each within CHECK_TIMEOUT.

    The primary goes first so that a replica found at or past the primary's
    position is known to have been caught up when the primary was read.
    Replicas are checked in ``pool``, or in threads started for this call.
    """
    timeout = config.check_timeout
    primary_settings = databases[config.primary]
    probe = probe or probe_for(primary_settings)
    primary = probe.check_primary(config.primary, primary_settings, timeout)
    aliases = list(config.replicas)

    def check(alias: str) -> ReplicaReading:
        return probe.check_replica(alias, databases[alias], timeout)

    if len(aliases) < 2:
        return primary, [check(alias) for alias in aliases]
    if pool is not None:
        return primary, pool.map(check, aliases)
    with DaemonPool(len(aliases)) as own:
        return primary, own.map(check, aliases)


def tracker_for(config: Config, databases: Mapping[str, Mapping[str, Any]]) -> Tracker:
    """Return a :class:`Tracker` of ``config``'s replicas, named by endpoint."""
    return Tracker(
        config,
        {alias: describe_endpoint(databases[alias]) for alias in config.replicas},
    )


_T = TypeVar("_T")
_D = TypeVar("_D", PrimaryStatus, ReplicaReading, ReplicaStatus)


class DaemonPool:
    """
    A fixed set of daemon threads that run calls in parallel.

    Unlike a ThreadPoolExecutor it keeps taking work while the interpreter
    exits and is never joined then: the monitor goes on measuring, quietly,
    until the process is gone (and Python 3.12+ refuses to start threads
    during exit, so they are started up front).
    """

    def __init__(self, size: int, name: str = "rwsplit-probe") -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            task()

    def map(self, func: Callable[[str], _T], items: Sequence[str]) -> list[_T]:
        """Return ``[func(item) for item in items]``, computed in parallel."""
        results: dict[int, _T] = {}
        errors: list[BaseException] = []
        done = threading.Semaphore(0)

        def task(index: int, item: str) -> Callable[[], None]:
            def run() -> None:
                try:
                    results[index] = func(item)
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    errors.append(exc)
                finally:
                    done.release()

            return run

        for index, item in enumerate(items):
            self._tasks.put(task(index, item))
        for _ in items:
            done.acquire()
        if errors:
            raise errors[0]
        return [results[i] for i in range(len(items))]

    def close(self) -> None:
        """Let the threads finish (they exit after their current task)."""
        for _ in self._threads:
            self._tasks.put(None)

    def __enter__(self) -> DaemonPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


ROUND_FORMAT = 2  # bumped whenever the shared round's shape changes


@dataclass(frozen=True)
class FleetVerdict:
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

    def get(self, measure_now: Callable[[], Round]) -> tuple[Round, Any, float] | None:
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

    def fleet_verdict(self, after: Any = None) -> FleetVerdict | None:
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
                return FleetVerdict(snapshot, str(stored.get("by", "?")), current)
            first = False
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(0.05, self.interval / 4))

    def _measure(self, measure_now: Callable[[], Round]) -> tuple[Round, str]:
        got = measure_now()
        self.measured += 1
        return got, f"{self.owner}:{self.measured}"

    def _borrow(self, stored: Any) -> tuple[Round, Any, float] | None:
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


def decode_round(payload: Mapping[str, Any]) -> Round:
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


class Monitor(threading.Thread):
    """A daemon thread that feeds one round of readings per interval to ``sink``."""

    def __init__(
        self,
        config: Config,
        databases: Mapping[str, Mapping[str, Any]],
        sink: Callable[[PrimaryStatus, Sequence[ReplicaReading], float], None],
        verdict: Callable[[], HealthSnapshot] | None = None,
    ) -> None:
        super().__init__(name="django_rwsplit-health", daemon=True)
        self.config = config
        self.databases = databases
        self.sink = sink
        # This process's snapshot, shared after each round it measured.
        self.verdict = verdict
        self.first_round = threading.Event()
        self.stopping = threading.Event()
        self.rounds = 0
        self.shared = SharedRounds.of_cluster(config, databases)
        self._last_id: Any = None

    def run(self) -> None:
        with DaemonPool(max(1, len(self.config.replicas))) as pool:
            while not self.stopping.is_set():
                started = time.monotonic()
                try:
                    self.run_round(pool)
                except Exception:  # noqa: BLE001 - keep checking whatever happens
                    logger.exception("Replica health round failed.")
                finally:
                    self.first_round.set()
                elapsed = time.monotonic() - started
                self.stopping.wait(max(0.0, self.config.check_interval - elapsed))

    def run_round(self, pool: DaemonPool | None = None) -> None:
        """Measure (or borrow) one round and hand it to the sink."""

        def measure_now() -> Round:
            return measure(self.config, self.databases, pool=pool)

        if self.shared is None:
            measured_at = time.monotonic()
            primary, readings = measure_now()
        else:
            got = self.shared.get(measure_now)
            if got is None:
                return
            (primary, readings), round_id, measured_at = got
            if round_id == self._last_id:
                return
            self._last_id = round_id
        self.rounds += 1
        self.sink(primary, readings, measured_at)
        shared, verdict = self.shared, self.verdict
        if shared is not None and verdict is not None and shared.owns(round_id):
            shared.publish_verdict(round_id, verdict())

    def stop(self) -> None:
        """Ask the thread to finish after its current round."""
        self.stopping.set()
