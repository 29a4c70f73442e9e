"""Measure the primary and replicas in rounds, optionally sharing one measurer."""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from django_rwsplit.conf import Config
from django_rwsplit.health.pgwire import describe_endpoint
from django_rwsplit.health.probes import (
    PrimaryStatus,
    Probe,
    ReplicaReading,
    probe_for,
)
from django_rwsplit.health.tracker import HealthSnapshot, Tracker

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


def measure_into(
    tracker: Tracker,
    config: Config,
    databases: Mapping[str, Mapping[str, Any]],
    *,
    settle: bool,
) -> HealthSnapshot:
    """
    Measure one round into ``tracker`` and return its snapshot.

    With ``settle`` (a tracker's first round), a replica found behind gets a
    second round, which gives the primary a history to time its lag by.
    """
    tracker.apply(*measure(config, databases))
    if settle and any((r.lag_bytes or 0) > 0 for r in tracker.snapshot().replicas):
        tracker.apply(*measure(config, databases))
    return tracker.snapshot()


_T = TypeVar("_T")


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


class SharedRounds:
    """
    Share rounds through a Django cache so one process measures for the fleet.

    The process holding the lock key (taken with ``add``, kept alive by each
    round it measures) measures every interval and stores its round; the
    others read it. When the stored round is older than three intervals (the
    measurer died or stalled), every process measures for itself until a new
    holder takes the lock, which expires after ``lock_ttl`` seconds.
    """

    LOCK_KEY = "django_rwsplit:health:lock"
    ROUND_KEY = "django_rwsplit:health:round"

    def __init__(self, cache_alias: str, interval: float) -> None:
        from django.core.cache import caches

        self.cache = caches[cache_alias]
        self.interval = interval
        self.owner = f"{os.getpid()}:{id(self)}"
        # Django's cache timeouts are whole seconds on some backends (Redis).
        self.lock_ttl = max(1, math.ceil(3 * interval))
        self.measured = 0
        self.borrowed = 0

    def get(self, measure_now: Callable[[], Round]) -> tuple[Round, Any] | None:
        """Return a fresh round and its id, measuring only if elected or stale."""
        try:
            elected = (
                self.cache.add(self.LOCK_KEY, self.owner, timeout=self.lock_ttl)
                or self.cache.get(self.LOCK_KEY) == self.owner
            )
            stored = None if elected else self.cache.get(self.ROUND_KEY)
        except Exception:  # noqa: BLE001 - a cache outage must not stop checks
            logger.warning(
                "Health cache unavailable; measuring locally.", exc_info=True
            )
            return measure_now(), None
        if stored is not None and time.time() - stored["at"] <= 3 * self.interval:
            self.borrowed += 1
            return _decode(stored), stored["id"]
        primary, readings = measure_now()
        self.measured += 1
        payload = {
            "id": f"{self.owner}:{self.measured}",
            "at": time.time(),
            "primary": asdict(primary),
            "replicas": [asdict(reading) for reading in readings],
        }
        try:
            self.cache.set(self.ROUND_KEY, payload, timeout=10 * self.lock_ttl)
            if elected:
                self.cache.touch(self.LOCK_KEY, timeout=self.lock_ttl)
        except Exception:  # noqa: BLE001
            logger.warning("Could not share health round.", exc_info=True)
        return (primary, readings), payload["id"]


def _decode(payload: Mapping[str, Any]) -> Round:
    return (
        PrimaryStatus(**payload["primary"]),
        [ReplicaReading(**reading) for reading in payload["replicas"]],
    )


class Monitor(threading.Thread):
    """A daemon thread that feeds one round of readings per interval to ``sink``."""

    def __init__(
        self,
        config: Config,
        databases: Mapping[str, Mapping[str, Any]],
        sink: Callable[[PrimaryStatus, Sequence[ReplicaReading]], None],
    ) -> None:
        super().__init__(name="django_rwsplit-health", daemon=True)
        self.config = config
        self.databases = databases
        self.sink = sink
        self.first_round = threading.Event()
        self.stopping = threading.Event()
        self.rounds = 0
        self.shared = (
            SharedRounds(config.health_cache, config.check_interval)
            if config.health_cache
            else None
        )
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
            primary, readings = measure_now()
        else:
            got = self.shared.get(measure_now)
            if got is None:
                return
            (primary, readings), round_id = got
            if round_id is not None and round_id == self._last_id:
                return
            self._last_id = round_id
        self.rounds += 1
        self.sink(primary, readings)

    def stop(self) -> None:
        """Ask the thread to finish after its current round."""
        self.stopping.set()
