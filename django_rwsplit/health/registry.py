"""
The process's health registry: every cluster's health state, one monitor thread.

A serving process (:mod:`django_rwsplit.startup`) starts it in
``AppConfig.ready()`` and its forked children start their own at once; any
other process (a management command, a test) at its first routing decision
that needs a replica. Nothing starts at import. Each cluster's state is a
:class:`~django_rwsplit.health.cluster_state.ProcessHealth`; the read
planner (:mod:`django_rwsplit.planner`) is given it as its health view.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from django_rwsplit.conf import DEFAULT_CLUSTER, Config, get_config
from django_rwsplit.health import deadline, history, notify
from django_rwsplit.health.cluster_state import ProcessHealth
from django_rwsplit.health.monitor import MonitorThread
from django_rwsplit.health.reasons import Reason
from django_rwsplit.health.tracker import HealthSnapshot

__all__ = [
    "HealthRegistry",
    "ProcessHealth",
    "current",
    "current_of",
    "every_cluster",
    "for_alias",
    "out_of_rotation",
    "process_health",
    "report_unreachable",
    "reset",
    "reset_after_fork",
    "running",
    "serving",
    "start_serving",
    "states",
    "snapshot",
]


class HealthRegistry:
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

    def start(self, *, wait: bool = True) -> None:
        """Start the threads; with ``wait``, wait for each first round (bounded)."""
        self.monitor.start()
        self.watchdog.start()
        # A round is the primary, then the replicas in parallel: two timeouts.
        bound = max(2 * s.config.check_timeout + 0.5 for s in self.states.values())
        until = time.monotonic() + bound
        for state in self.states.values():
            # Reads wait for a first round until then, and never after.
            state.first_round_due = until
        if not wait:
            return
        for state in self.states.values():
            state.monitor.first_round.wait(max(0.0, until - time.monotonic()))

    def stop(self) -> None:
        """Ask the threads to finish after their current round."""
        self.monitor.stop()

    def wait_stopped(self) -> None:
        """
        Wait (bounded) until the monitor thread ended and its signals went out.

        A round in progress ends within its deadlines (two ``CHECK_TIMEOUT``
        and the cache's); after this, a stopped fleet announces nothing more
        (a test's recorder of transitions sees only its own fleet's).
        """
        monitor = self.monitor
        if monitor.is_alive() and threading.current_thread() is not monitor:
            bound = max(3 * s.config.check_timeout for s in self.states.values())
            monitor.join(bound + 0.5)
        notify.flush(1.0)


_lock = threading.Lock()
_registry: HealthRegistry | None = None
# Whether this process serves (start_serving): its forked children start
# their own health at once too.
_serving = False
# The default cluster's running state (None before checks start): read on
# every routed read, by attribute (cheaper than a call to current()).
running: ProcessHealth | None = None
# Every cluster's running state by name: the running HealthRegistry's own (never
# changed once made), or {} before checks start.
states: dict[str, ProcessHealth] = {}


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


def start_serving(config: Config) -> bool:
    """
    Start every cluster's health now, off the request path (a serving process).

    Called from ``AppConfig.ready()`` in servers and workers
    (:func:`django_rwsplit.startup.serves`) and again in their forked
    children; it does not wait for the first rounds: until a cluster's first
    round ends, its reads go to the primary. Returns whether it started.
    """
    global _serving
    if config.problems or not any(c.replicas for c in config.every_cluster()):
        return False
    _serving = True
    _start(config, wait=False)
    return True


def process_health(config: Config) -> ProcessHealth:
    """
    Return this process's health state of cluster ``config``, starting it if needed.

    A serving process started it in ``AppConfig.ready()``; elsewhere (a
    management command, a test) the first call starts the health of every
    cluster of the setting (one monitor thread for all) and waits for the
    first rounds, bounded. A changed setting replaces it.
    """
    fleet = _registry
    if fleet is not None:
        state = fleet.states.get(config.name)
        if state is not None and state.config is config:
            return state
    return _start(config, wait=True)


def _start(config: Config, *, wait: bool) -> ProcessHealth:
    global _registry, running, states
    with _lock:
        fleet = _registry
        state = fleet.states.get(config.name) if fleet is not None else None
        if state is None or state.config is not config:
            if fleet is not None:
                fleet.stop()
            fleet = HealthRegistry(_configs_with(config))
            fleet.start(wait=wait)
            _registry = fleet
            running = fleet.states.get(DEFAULT_CLUSTER)
            states = fleet.states
            state = fleet.states[config.name]
    return state


def reset() -> None:
    """Stop and forget the monitor; the next routing decision starts a new one."""
    global running, _registry, states
    with _lock:
        stopped = _registry
        if stopped is not None:
            stopped.stop()
        running = _registry = None
        states = {}
    if stopped is not None:
        stopped.wait_stopped()
    history.clear()


def reset_after_fork() -> None:
    """In a forked child, forget the parent's (not running) monitor thread."""
    global running, _registry, _lock, states
    _lock = threading.Lock()
    running = _registry = None
    states = {}
    deadline.reset_after_fork()
    notify.reset_after_fork()


def serving() -> bool:
    """Whether this process started its health at start-up (start_serving)."""
    return _serving


def current() -> ProcessHealth | None:
    """The default cluster's running health state (None before checks start)."""
    return running


def current_of(cluster: str) -> ProcessHealth | None:
    """The running health state of ``cluster`` (None before checks start)."""
    return states.get(cluster)


def every_cluster() -> tuple[ProcessHealth, ...]:
    """The running health state of every cluster (empty before the first start)."""
    return tuple(states.values())


def for_alias(alias: str) -> ProcessHealth | None:
    """The running health state of the cluster ``alias`` is a primary or replica of."""
    fleet = _registry
    return fleet.by_alias.get(alias) if fleet is not None else None


def snapshot(cluster: str | None = None) -> HealthSnapshot | None:
    """Return the current health snapshot of ``cluster`` (default), if checks run."""
    state = current() if cluster is None else current_of(cluster)
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
