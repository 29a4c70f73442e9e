"""
The process-wide health state the router reads, and the replica choice.

The monitor thread starts on the first routing decision that needs a
replica, not at import, and again in a forked child. A routing decision
reads the current :class:`~django_rwsplit.balancing.Rotation`: an attribute
read, with no I/O and no lock in the common case.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from django.db import connections

from django_rwsplit import history, inflight, observe, signals
from django_rwsplit.balancing import Rotation
from django_rwsplit.conf import Config
from django_rwsplit.exceptions import NoReplicaAvailable
from django_rwsplit.health.monitor import Monitor, tracker_for
from django_rwsplit.health.probes import PrimaryStatus, ReplicaReading
from django_rwsplit.health.tracker import HealthSnapshot, Transition
from django_rwsplit.pinning import Scope

logger = logging.getLogger("django_rwsplit")


class ProcessHealth:
    """The tracker and monitor thread of one process for one configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        databases = {alias: connections.settings[alias] for alias in config.replicas}
        databases[config.primary] = connections.settings[config.primary]
        self.tracker = tracker_for(config, databases)
        self.monitor = Monitor(config, databases, self._take_round)
        self.fallback_active = False
        self.primary_problem: str | None = None
        self.pid = os.getpid()

    @property
    def rotation(self) -> Rotation:
        """The replicas in rotation now (kept current by the tracker)."""
        return self.tracker.rotation

    def _take_round(
        self, primary: PrimaryStatus, readings: Sequence[ReplicaReading]
    ) -> None:
        transitions = self.tracker.apply(primary, readings)
        history.record(self.tracker.snapshot())
        self._announce(transitions)
        for reading in readings:
            if not reading.reachable and (reading.error or "").startswith("timeout"):
                inflight.release(reading.alias)
        self._primary_changed(primary)
        self._fallback_changed(not self.tracker.rotation.members)

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
                logger.info("Replica %r back in rotation.", transition.alias)
                signal = signals.replica_readmitted
            else:
                logger.warning(
                    "Replica %r left rotation: %s.", transition.alias, transition.reason
                )
                signal = signals.replica_ejected
            signal.send(
                sender=ProcessHealth,
                alias=transition.alias,
                reason=transition.reason,
                lag_seconds=transition.lag_seconds,
                lag_bytes=transition.lag_bytes,
            )

    def eject(self, alias: str, reason: str) -> None:
        """Take ``alias`` out of rotation at once."""
        transition = self.tracker.eject(alias, reason)
        if transition is not None:
            self._announce([transition])
            if not self.tracker.rotation.members:
                self._fallback_changed(True)

    def start(self) -> None:
        """Start the monitor; wait for its first round (two CHECK_TIMEOUTs at most)."""
        self.monitor.start()
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


def current() -> ProcessHealth | None:
    """Return the running health state, if a routing decision started one."""
    return _current


def snapshot() -> HealthSnapshot | None:
    """Return the current health snapshot of this process, if checks run."""
    state = _current
    return state.tracker.snapshot() if state is not None else None


def report_unreachable(alias: str, error: BaseException) -> None:
    """Passive detection: a request could not connect to replica ``alias``."""
    state = _current
    if state is not None:
        message = str(error).splitlines()[0][:200].removeprefix("connection failed: ")
        state.eject(alias, f"connection failed: {message}")


def choose_replica(config: Config, scope: Scope | None) -> str:
    """Return the alias that should serve an unpinned read."""
    if config.test_mirrors and mirrors_active(config):
        return config.primary
    state = _current
    if state is None or state.config is not config:
        state = process_health(config)
    rotation = state.tracker.rotation
    if scope is not None:
        chosen = scope.replica
        if chosen is not None and chosen in rotation.members:
            return chosen
        if scope.min_lsn is not None:
            return _causal_choice(state, config, scope, rotation)
    alias = rotation.pick()
    if alias is None:
        return fallback(config)
    if scope is not None:
        scope.replica = alias
    return alias


def _causal_choice(
    state: ProcessHealth, config: Config, scope: Scope, rotation: Rotation
) -> str:
    from django_rwsplit.consistency import replica_reached

    if not rotation.members:
        return fallback(config)
    for _ in range(len(rotation.members)):
        alias = rotation.pick()
        if alias is not None and replica_reached(state, alias, scope):
            scope.replica = alias
            return alias
    if not _token_plausible(state, config, scope.min_lsn):
        scope.min_lsn = None
        return choose_replica(config, scope)
    # No replica has the client's last write yet: the rest of the scope
    # reads from the primary without asking the replicas again.
    scope.pinned = "token"
    observe.pin("token")
    return config.primary


def _token_plausible(state: ProcessHealth, config: Config, lsn: int | None) -> bool:
    """
    Return False for a token past the primary's current WAL position.

    Such a token was not issued by this primary (forged with a leaked key, or
    from before a restore); honouring it would pin the client to the primary
    until it expires. The primary is asked only when the token is ahead of
    the last health round.
    """
    from django_rwsplit.consistency import primary_position

    if lsn is None:
        return False
    known = state.tracker.primary
    if known is not None and known.current_lsn is not None and lsn <= known.current_lsn:
        return True
    current = primary_position(config.primary)
    return current is None or lsn <= current


def fallback(config: Config) -> str:
    """Return where reads go with no replica in rotation (or raise)."""
    if config.fallback == "error":
        raise NoReplicaAvailable(
            "No replica is in rotation and RWSPLIT['FALLBACK'] is 'error'; "
            "run 'manage.py replica_health' to see why."
        )
    return config.primary


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
    for alias in config.replicas:
        name = connections.settings[alias].get("NAME")
        return bool(name != _startup_names.get(alias, name))
    return False
