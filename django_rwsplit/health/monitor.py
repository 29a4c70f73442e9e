"""Measure the primary and replicas in rounds, optionally sharing one measurer."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from django_rwsplit.conf import Config
from django_rwsplit.health.probes import (
    PrimaryStatus,
    Probe,
    ReplicaReading,
    probe_for,
)

logger = logging.getLogger("django_rwsplit")

Round = tuple[PrimaryStatus, list[ReplicaReading]]


def measure(
    config: Config,
    databases: Mapping[str, Mapping[str, Any]],
    probe: Probe | None = None,
) -> Round:
    """
    Measure the primary, then every replica at once, each within CHECK_TIMEOUT.

    The primary goes first so that a replica found at or past the primary's
    position is known to have been caught up when the primary was read.
    """
    timeout = config.check_timeout
    primary_settings = databases[config.primary]
    probe = probe or probe_for(primary_settings)
    primary = probe.check_primary(config.primary, primary_settings, timeout)

    def check(alias: str) -> ReplicaReading:
        return probe.check_replica(alias, databases[alias], timeout)

    return primary, in_parallel(check, list(config.replicas))


_T = TypeVar("_T")


def in_parallel(check: Callable[[str], _T], aliases: Sequence[str]) -> list[_T]:
    """
    Run ``check`` for every alias at once, in daemon threads; return in order.

    Plain daemon threads rather than a ThreadPoolExecutor: an executor stops
    taking work at interpreter exit (a monitor round then fails loudly) and
    makes exit wait for its workers.
    """
    if len(aliases) < 2:
        return [check(alias) for alias in aliases]
    results: dict[int, _T] = {}
    errors: list[BaseException] = []

    def run(index: int, alias: str) -> None:
        try:
            results[index] = check(alias)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [
        threading.Thread(
            target=run, args=(i, alias), name=f"rwsplit-probe-{alias}", daemon=True
        )
        for i, alias in enumerate(aliases)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(aliases))]


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
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.run_round()
            except Exception:  # noqa: BLE001 - keep checking whatever happens
                logger.exception("Replica health round failed.")
            finally:
                self.first_round.set()
            elapsed = time.monotonic() - started
            self.stopping.wait(max(0.0, self.config.check_interval - elapsed))

    def run_round(self) -> None:
        """Measure (or borrow) one round and hand it to the sink."""

        def measure_now() -> Round:
            return measure(self.config, self.databases)

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
