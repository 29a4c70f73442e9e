"""
One cluster's health in this process: its tracker, rounds and rotation.

A routing decision reads the current
:class:`~django_rwsplit.health.rotation.Rotation` of the cluster: an
attribute read, with no I/O and no lock in the common case. The rounds run
in the process's one monitor thread and the expiry in its one watchdog
(:class:`~django_rwsplit.health.state.HealthRegistry`).

The rotation expires: each round stamps it with when it was measured (or,
for a round borrowed through ``HEALTH_CACHE``, when this process first saw
it). The watchdog, which does no I/O and so cannot hang with the monitor,
looks every ``CHECK_INTERVAL``: once the stamp is older than
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
from django_rwsplit.health import history, load, nodes, notify, release, timelines
from django_rwsplit.health.monitor import Monitor, tracker_for
from django_rwsplit.health.probes import (
    FencedNode,
    PrimaryStatus,
    ProbeFailure,
    ReplicaReading,
)
from django_rwsplit.health.reasons import Reason
from django_rwsplit.health.rotation import EMPTY, Rotation
from django_rwsplit.health.tracker import HealthSnapshot, ReplicaStatus, Transition
from django_rwsplit.health.verdict import PrimaryVerdict, judge_primary, primary_problem

logger = logging.getLogger("django_rwsplit")


class ProcessHealth:
    """
    One cluster's health in this process: its tracker, rounds and rotation.

    The rounds run in the process's one monitor thread, and the expiry in its
    one watchdog (:class:`HealthRegistry`, shared by every cluster).
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
        self.primary_verdict = PrimaryVerdict.WRITABLE
        self.pid = os.getpid()
        # A round normally lands every max(interval, 2 timeouts) and takes
        # up to two timeouts (the primary, then the replicas at once).
        self.stale_after = 3 * config.check_interval + 2 * config.check_timeout
        # time.monotonic() of the last round's measurement, and the moment
        # (stamp + stale_after) after which its rotation no longer counts.
        self.measured_at: float | None = None
        self.fresh_until = -float("inf")
        self.stale_logged = False
        # A multi-host primary alias (health.nodes): the node writes go to,
        # when it last changed (time.time()) and the writable nodes fenced.
        self.primary_node: str | None = None
        self.primary_changed_at: float | None = None
        self.fenced: tuple[FencedNode, ...] = ()
        # The primary's timeline and its ancestors' switch points.
        self.lineage = timelines.Lineage()
        # Replicas whose last check got no answer within CHECK_TIMEOUT.
        self.hung: frozenset[str] = frozenset()
        # Publishing a rotation (a round, an ejection, the watchdog) is rare:
        # a lock keeps a late watchdog from hiding a fresh round's rotation.
        self._publishing = threading.Lock()
        # When reads stop waiting for a first round (HealthRegistry.start).
        self.first_round_due = 0.0

    @property
    def primary(self) -> PrimaryStatus | None:
        """The primary's last status (None before the first round)."""
        return self.tracker.primary

    def await_first_round(self) -> bool:
        """
        Wait for the first round if it has not ended: True if it ended meanwhile.

        Every read made while a server's health starts waits until one
        deadline, ``first_round_due`` (set when the health started: the
        primary's check, then the replicas' in parallel), so that they route
        by the first round, not by the empty rotation before it; after that
        deadline, none waits.
        """
        done = self.monitor.first_round
        if done.is_set():
            return False
        left = self.first_round_due - time.monotonic()
        return left > 0 and done.wait(left)

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
            primary_changed_at=self.primary_changed_at,
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
        load.judge(time.perf_counter(), self.rotation.members, self.config.name)

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
        load.judge(time.perf_counter(), self.rotation.members, self.config.name)
        history.record(self.snapshot(), self.config.name)
        self.hung = frozenset(
            reading.alias
            for reading in readings
            if not reading.reachable and reading.failure is ProbeFailure.TIMEOUT
        )
        for alias in sorted(self.hung):
            release.release(
                alias,
                self.databases[alias],
                waited=self.config.check_timeout,
                still_hung=functools.partial(self.still_hung, alias),
            )
        self._primary_changed(primary)
        self._follow_primary_node(primary)
        self._fallback_changed(not self.rotation.members)

    def still_hung(self, alias: str) -> bool:
        """Return whether the last round found ``alias`` hung (no answer in time)."""
        return alias in self.hung

    def _primary_changed(self, primary: PrimaryStatus) -> None:
        """Log each change of the primary's verdict (not of its error's words)."""
        verdict = judge_primary(primary)
        if verdict is self.primary_verdict:
            return
        self.primary_verdict = verdict
        if verdict is not PrimaryVerdict.WRITABLE:
            problem = primary_problem(primary)
            logger.error("Primary %r is %s.", self.config.primary, problem)
        else:
            logger.info("Primary %r is writable again.", self.config.primary)

    def _follow_timeline(self, primary: PrimaryStatus) -> None:
        """A new timeline of the primary: read where its ancestors forked."""
        timeline = primary.timeline
        if timeline is None or timeline == self.lineage.timeline:
            return
        points = None
        if timeline > 1 and primary.node is not None:
            settings_dict = nodes.node_settings(
                self.databases[self.config.primary], primary.node
            )
            points = timelines.read_switch_points(
                settings_dict, timeline, self.config.check_timeout
            )
        self.lineage.moved(timeline, points, primary.current_lsn)

    def _follow_primary_node(self, primary: PrimaryStatus) -> None:
        """A multi-host primary alias: note where writes go; report a move, fencing."""
        self._follow_timeline(primary)
        if primary.node is not None and primary.node != self.primary_node:
            previous, self.primary_node = self.primary_node, primary.node
            self.primary_changed_at = time.time()
            if previous is not None:
                logger.warning(
                    "Primary %r moved from %s to %s (timeline %s).",
                    self.config.primary,
                    previous,
                    primary.node,
                    primary.timeline,
                )
                signals.send_robust(
                    signals.primary_changed,
                    sender=ProcessHealth,
                    alias=self.config.primary,
                    node=primary.node,
                    previous=previous,
                    timeline=primary.timeline,
                )
        if primary.fenced == self.fenced:
            return
        # Logged at ERROR with the verdict (_primary_changed): announced here.
        self.fenced = primary.fenced
        for fenced in primary.fenced:
            signals.send_robust(
                signals.primary_fenced,
                sender=ProcessHealth,
                alias=self.config.primary,
                node=fenced.node,
                timeline=fenced.timeline,
                primary=primary.node,
            )

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

    def hold_until_replayed(self, alias: str, lsn: int) -> None:
        """Take ``alias`` out until a round finds it has replayed ``lsn``."""
        transition = self.tracker.hold(alias, lsn)
        if transition is not None:
            self._announce([transition])
            if not self.rotation.members:
                self._fallback_changed(True)

    def eject(self, alias: str, reason: str, kind: Reason | None = None) -> None:
        """Take ``alias`` out of rotation at once."""
        transition = self.tracker.eject(alias, reason, kind)
        if transition is not None:
            self._announce([transition])
            if not self.rotation.members:
                self._fallback_changed(True)
