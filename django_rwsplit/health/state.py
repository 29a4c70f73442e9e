"""
The process-wide health state: the tracker, its monitor thread, accessors.

The monitor thread starts on the first routing decision that needs a
replica, not at import, and again in a forked child. A routing decision
reads the current :class:`~django_rwsplit.health.rotation.Rotation`: an
attribute read, with no I/O and no lock in the common case. The choice of
replica is :mod:`django_rwsplit.balancing`'s.

The rotation expires: each round stamps it with when it was measured (or,
for a round borrowed through ``HEALTH_CACHE``, when this process first saw
it). A watchdog thread, which does no I/O and so cannot hang with the
monitor, looks every ``CHECK_INTERVAL``: once the stamp is older than
:attr:`ProcessHealth.stale_after` (``3 * CHECK_INTERVAL + 2 * CHECK_TIMEOUT``)
it publishes the empty rotation, so reads fail closed (``FALLBACK``) until a
new round arrives. The router itself pays nothing for this.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from django.db import connections

from django_rwsplit import signals
from django_rwsplit.conf import Config
from django_rwsplit.health import deadline, history, load, notify, release
from django_rwsplit.health.monitor import Monitor, tracker_for
from django_rwsplit.health.probes import PrimaryStatus, ReplicaReading
from django_rwsplit.health.reasons import Reason
from django_rwsplit.health.rotation import EMPTY, Rotation
from django_rwsplit.health.tracker import HealthSnapshot, ReplicaStatus, Transition

logger = logging.getLogger("django_rwsplit")


class ProcessHealth:
    """The tracker and monitor thread of one process for one configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        databases = {alias: connections.settings[alias] for alias in config.replicas}
        databases[config.primary] = connections.settings[config.primary]
        self.databases = databases
        self.tracker = tracker_for(config, databases)
        # The replicas in rotation now: the tracker's, handed over on each
        # change (a plain attribute: the router reads it on every read).
        self.rotation: Rotation = self.tracker.rotation
        self.tracker.on_rotation = self._rotation_changed
        self.monitor = Monitor(config, databases, self._take_round, self.snapshot)
        self.fallback_active = False
        self.primary_problem: str | None = None
        self.pid = os.getpid()
        # A round normally lands every max(interval, 2 timeouts) and takes
        # up to two timeouts (the primary, then the replicas at once).
        self.stale_after = 3 * config.check_interval + 2 * config.check_timeout
        # time.monotonic() of the last round's measurement, and the moment
        # (stamp + stale_after) after which its rotation no longer counts.
        self.measured_at: float | None = None
        self.fresh_until = -float("inf")
        self.stale_logged = False
        # Replicas whose last check got no answer within CHECK_TIMEOUT.
        self.hung: frozenset[str] = frozenset()
        # Publishing a rotation (a round, an ejection, the watchdog) is rare:
        # a lock keeps a late watchdog from hiding a fresh round's rotation.
        self._publishing = threading.Lock()
        self.watchdog = threading.Thread(
            target=self._watch, name="django_rwsplit-watchdog", daemon=True
        )

    @property
    def primary(self) -> PrimaryStatus | None:
        """The primary's last status (None before the first round)."""
        return self.tracker.primary

    def _publish(self) -> None:
        """Hand readers the tracker's rotation, or the empty one once stale."""
        with self._publishing:
            fresh = time.monotonic() <= self.fresh_until
            self.rotation = self.tracker.rotation if fresh else EMPTY

    def _watch(self) -> None:
        """The watchdog: expire the rotation when rounds stop coming."""
        while not self.monitor.stopping.wait(self.config.check_interval):
            if time.monotonic() <= self.fresh_until or not self.rotation.members:
                continue
            self.stale_logged = True
            logger.error(
                "No health round for %.1f s (bound %.1f s): replicas leave "
                "rotation until checks resume.",
                self.round_age() or 0.0,
                self.stale_after,
            )
            self._publish()
            self._fallback_changed(True)

    def round_age(self) -> float | None:
        """Seconds since the last round was measured (None before the first)."""
        if self.measured_at is None:
            return None
        return max(0.0, time.monotonic() - self.measured_at)

    def snapshot(self) -> HealthSnapshot:
        """The tracker's snapshot, with the round's age (stale: critical)."""
        return replace(
            self.tracker.snapshot(),
            round_age_seconds=self.round_age(),
            stale_after_seconds=self.stale_after,
        )

    def in_rotation(self, alias: str) -> bool:
        """Return whether replica ``alias`` may serve reads now."""
        return alias in self.rotation.members

    def pick(self) -> str | None:
        """Return the rotation's next replica (None when it is empty)."""
        return self.rotation.pick()

    def status(self, alias: str) -> ReplicaStatus | None:
        """Return replica ``alias``'s latest status (None before its first check)."""
        return self.tracker.status(alias)

    def unreachable(self, alias: str) -> bool:
        """Return whether ``alias`` was last found unreachable (not merely lagging)."""
        return self.tracker.unreachable(alias)

    def _rotation_changed(self, rotation: Rotation) -> None:
        self._publish()
        load.judge(time.perf_counter(), self.rotation.members)

    def _take_round(
        self,
        primary: PrimaryStatus,
        readings: Sequence[ReplicaReading],
        measured_at: float,
    ) -> None:
        self.measured_at = measured_at
        self.fresh_until = measured_at + self.stale_after
        transitions = self.tracker.apply(primary, readings)
        self._publish()  # also when membership did not change (after a stall)
        if self.stale_logged:
            self.stale_logged = False
            logger.info("Health rounds resumed.")
        # Announce first: receivers (metrics) see a change as soon as readers can.
        self._announce(transitions)
        for reading in readings:
            if reading.reachable:
                load.take_check(
                    reading.alias, reading.query_ms, reading.active_backends
                )
        load.judge(time.perf_counter(), self.rotation.members)
        history.record(self.snapshot())
        self.hung = frozenset(
            reading.alias
            for reading in readings
            if not reading.reachable and (reading.error or "").startswith("timeout")
        )
        for alias in sorted(self.hung):
            release.release(
                alias,
                self.databases[alias],
                waited=self.config.check_timeout,
                still_hung=functools.partial(self.still_hung, alias),
            )
        self._primary_changed(primary)
        self._fallback_changed(not self.rotation.members)

    def still_hung(self, alias: str) -> bool:
        """Return whether the last round found ``alias`` hung (no answer in time)."""
        return alias in self.hung

    def _primary_changed(self, primary: PrimaryStatus) -> None:
        problem = (
            "unreachable"
            if not primary.reachable
            else "in recovery (read-only)"
            if primary.in_recovery
            else None
        )
        if problem == self.primary_problem:
            return
        self.primary_problem = problem
        if problem is not None:
            logger.error("Primary %r is %s.", self.config.primary, problem)
        else:
            logger.info("Primary %r is reachable again.", self.config.primary)

    def _fallback_changed(self, active: bool) -> None:
        if active == self.fallback_active:
            return
        self.fallback_active = active
        if active:
            logger.warning(
                "No replica in rotation; reads go to %s.",
                f"the primary {self.config.primary!r}"
                if self.config.fallback == "primary"
                else "nowhere (FALLBACK='error')",
            )
        else:
            logger.info("Replicas back in rotation; reads leave the primary.")

    def _announce(self, transitions: Sequence[Transition]) -> None:
        for transition in transitions:
            if transition.admitted:
                logger.info(
                    "Replica %r %s rotation.",
                    transition.alias,
                    "in" if transition.first else "back in",
                )
                signal = signals.replica_readmitted
            else:
                logger.warning(
                    "Replica %r left rotation: %s.", transition.alias, transition.reason
                )
                signal = signals.replica_ejected
            notify.send(
                signal,
                ProcessHealth,
                alias=transition.alias,
                reason=transition.reason,
                kind=transition.kind,
                lag_seconds=transition.lag_seconds,
                lag_bytes=transition.lag_bytes,
            )

    def eject(self, alias: str, reason: str, kind: Reason | None = None) -> None:
        """Take ``alias`` out of rotation at once."""
        transition = self.tracker.eject(alias, reason, kind)
        if transition is not None:
            self._announce([transition])
            if not self.rotation.members:
                self._fallback_changed(True)

    def start(self) -> None:
        """Start the monitor; wait for its first round (two CHECK_TIMEOUTs at most)."""
        self.monitor.start()
        self.watchdog.start()
        # A round is the primary, then the replicas in parallel: two timeouts.
        self.monitor.first_round.wait(2 * self.config.check_timeout + 0.5)

    def stop(self) -> None:
        """Stop the monitor thread (used by tests and on reconfiguration)."""
        self.monitor.stop()


_lock = threading.Lock()
_current: ProcessHealth | None = None


def process_health(config: Config) -> ProcessHealth:
    """Return this process's health state for ``config``, starting it if needed."""
    global _current
    current = _current
    if current is not None and current.config is config:
        return current
    with _lock:
        current = _current
        if current is None or current.config is not config:
            if current is not None:
                current.stop()
            current = ProcessHealth(config)
            current.start()
            _current = current
    return current


def reset() -> None:
    """Stop and forget the monitor; the next routing decision starts a new one."""
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
        _current = None
    history.clear()


def reset_after_fork() -> None:
    """In a forked child, forget the parent's (not running) monitor thread."""
    global _current, _lock
    _lock = threading.Lock()
    _current = None
    deadline.reset_after_fork()
    notify.reset_after_fork()


def current() -> ProcessHealth | None:
    """Return the running health state, if a routing decision started one."""
    return _current


def snapshot() -> HealthSnapshot | None:
    """Return the current health snapshot of this process, if checks run."""
    state = _current
    return state.snapshot() if state is not None else None


def out_of_rotation(alias: str) -> bool:
    """Return True only when the running health state shows ``alias`` out."""
    state = _current
    return state is not None and not state.in_rotation(alias)


def report_unreachable(alias: str, error: BaseException) -> None:
    """Passive detection: a request could not connect to replica ``alias``."""
    state = _current
    if state is not None:
        message = str(error).splitlines()[0][:200].removeprefix("connection failed: ")
        state.eject(alias, f"connection failed: {message}", Reason.CONNECTION_FAILED)
