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
from django_rwsplit.conf import DEFAULT_CLUSTER, Config, get_config
from django_rwsplit.health import deadline, history, load, notify, release
from django_rwsplit.health.monitor import Monitor, MonitorThread, tracker_for
from django_rwsplit.health.probes import PrimaryStatus, ReplicaReading
from django_rwsplit.health.reasons import Reason
from django_rwsplit.health.rotation import EMPTY, Rotation
from django_rwsplit.health.tracker import HealthSnapshot, ReplicaStatus, Transition

logger = logging.getLogger("django_rwsplit")


class ProcessHealth:
    """
    One cluster's health in this process: its tracker, rounds and rotation.

    The rounds run in the process's one monitor thread, and the expiry in its
    one watchdog (:class:`Fleet`, shared by every cluster).
    """

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
        self.fleet: Fleet | None = None

    @property
    def primary(self) -> PrimaryStatus | None:
        """The primary's last status (None before the first round)."""
        return self.tracker.primary

    def _publish(self) -> None:
        """Hand readers the tracker's rotation, or the empty one once stale."""
        with self._publishing:
            fresh = time.monotonic() <= self.fresh_until
            self.rotation = self.tracker.rotation if fresh else EMPTY

    def expire_if_stale(self) -> None:
        """The watchdog's look: expire the rotation when rounds stop coming."""
        if time.monotonic() <= self.fresh_until or not self.rotation.members:
            return
        self.stale_logged = True
        logger.error(
            "No health round for %.1f s (bound %.1f s): replicas%s leave "
            "rotation until checks resume.",
            self.round_age() or 0.0,
            self.stale_after,
            self._of_cluster(),
        )
        self._publish()
        self._fallback_changed(True)

    def _of_cluster(self) -> str:
        """`` of cluster 'x'`` in log lines of a named cluster ('' for the default)."""
        return "" if self.config.is_default else f" of cluster {self.config.name!r}"

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
        history.record(self.snapshot(), self.config.name)
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
                    "Replica %r%s %s rotation.",
                    transition.alias,
                    self._of_cluster(),
                    "in" if transition.first else "back in",
                )
                signal = signals.replica_readmitted
            else:
                logger.warning(
                    "Replica %r%s left rotation: %s.",
                    transition.alias,
                    self._of_cluster(),
                    transition.reason,
                )
                signal = signals.replica_ejected
            notify.send(
                signal,
                ProcessHealth,
                alias=transition.alias,
                reason=transition.reason,
                kind=transition.kind,
                cluster=self.config.name,
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

    def stop(self) -> None:
        """Stop the monitor thread (used by tests and on reconfiguration)."""
        if self.fleet is not None:
            self.fleet.stop()


class Fleet:
    """
    Every cluster's :class:`ProcessHealth` in this process, and their threads.

    One monitor thread runs every cluster's rounds and one watchdog expires
    every cluster's rotation: a process has two health threads however many
    clusters it routes to.
    """

    def __init__(self, configs: Sequence[Config]) -> None:
        self.states = {config.name: ProcessHealth(config) for config in configs}
        self.by_alias: dict[str, ProcessHealth] = {}
        for state in self.states.values():
            state.fleet = self
            for alias in state.databases:
                self.by_alias[alias] = state
        self.monitor = MonitorThread([s.monitor for s in self.states.values()])
        self.watchdog = threading.Thread(
            target=self._watch, name="django_rwsplit-watchdog", daemon=True
        )

    def _watch(self) -> None:
        interval = min(s.config.check_interval for s in self.states.values())
        while not self.monitor.stopping.wait(interval):
            for state in self.states.values():
                state.expire_if_stale()

    def start(self) -> None:
        """Start the threads; wait for each cluster's first round (bounded)."""
        self.monitor.start()
        self.watchdog.start()
        # A round is the primary, then the replicas in parallel: two timeouts.
        wait = max(2 * s.config.check_timeout + 0.5 for s in self.states.values())
        until = time.monotonic() + wait
        for state in self.states.values():
            state.monitor.first_round.wait(max(0.0, until - time.monotonic()))

    def stop(self) -> None:
        """Ask the threads to finish after their current round."""
        self.monitor.stop()


_lock = threading.Lock()
_fleet: Fleet | None = None
# The default cluster's state (the router's hot path reads it directly).
_current: ProcessHealth | None = None


def _configs_with(config: Config) -> tuple[Config, ...]:
    """Every cluster of the setting ``config`` belongs to (itself if alone)."""
    if config.clusters:
        return config.every_cluster()
    if config.is_default:
        return (config,)
    top = get_config()
    if top.clusters.get(config.name) is config:
        return top.every_cluster()
    return (config,)


def process_health(config: Config) -> ProcessHealth:
    """
    Return this process's health state of cluster ``config``, starting it if needed.

    The first call starts the health of every cluster of the setting (one
    monitor thread for all); a changed setting replaces it.
    """
    global _fleet, _current
    fleet = _fleet
    if fleet is not None:
        state = fleet.states.get(config.name)
        if state is not None and state.config is config:
            return state
    with _lock:
        fleet = _fleet
        state = fleet.states.get(config.name) if fleet is not None else None
        if state is None or state.config is not config:
            if fleet is not None:
                fleet.stop()
            fleet = Fleet(_configs_with(config))
            fleet.start()
            _fleet = fleet
            _current = fleet.states.get(DEFAULT_CLUSTER)
            state = fleet.states[config.name]
    return state


def reset() -> None:
    """Stop and forget the monitor; the next routing decision starts a new one."""
    global _current, _fleet
    with _lock:
        if _fleet is not None:
            _fleet.stop()
        _current = _fleet = None
    history.clear()


def reset_after_fork() -> None:
    """In a forked child, forget the parent's (not running) monitor thread."""
    global _current, _fleet, _lock
    _lock = threading.Lock()
    _current = _fleet = None
    deadline.reset_after_fork()
    notify.reset_after_fork()


def current(cluster: str | None = None) -> ProcessHealth | None:
    """
    Return the running health state of ``cluster`` (None: the default cluster).

    None until a routing decision started the health checks.
    """
    if cluster is None:
        return _current
    fleet = _fleet
    return fleet.states.get(cluster) if fleet is not None else None


def every_cluster() -> tuple[ProcessHealth, ...]:
    """The running health state of every cluster (empty before the first start)."""
    fleet = _fleet
    return tuple(fleet.states.values()) if fleet is not None else ()


def for_alias(alias: str) -> ProcessHealth | None:
    """The running health state of the cluster ``alias`` is a primary or replica of."""
    fleet = _fleet
    return fleet.by_alias.get(alias) if fleet is not None else None


def snapshot(cluster: str | None = None) -> HealthSnapshot | None:
    """Return the current health snapshot of ``cluster`` (default), if checks run."""
    state = current(cluster)
    return state.snapshot() if state is not None else None


def out_of_rotation(alias: str) -> bool:
    """Return True only when the running health state shows ``alias`` out."""
    state = for_alias(alias)
    return state is not None and not state.in_rotation(alias)


def report_unreachable(alias: str, error: BaseException) -> None:
    """Passive detection: a request could not connect to replica ``alias``."""
    state = for_alias(alias)
    if state is not None:
        message = str(error).splitlines()[0][:200].removeprefix("connection failed: ")
        state.eject(alias, f"connection failed: {message}", Reason.CONNECTION_FAILED)
