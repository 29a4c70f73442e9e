"""
Measure the primary and replicas in rounds, optionally sharing one measurer.

One :class:`MonitorThread` per process runs the rounds of every cluster
(``RWSPLIT["CLUSTERS"]``), each cluster's :class:`Monitor` on its own
``CHECK_INTERVAL``; the clusters due at once are measured in parallel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from django_rwsplit.conf import Config
from django_rwsplit.health import nodes
from django_rwsplit.health.daemon_pool import DaemonPool
from django_rwsplit.health.pgwire import describe_endpoint
from django_rwsplit.health.probes import (
    FencedNode,
    PrimaryStatus,
    Probe,
    ReplicaReading,
    probe_for,
)
from django_rwsplit.health.shared import (
    Readings,
    SharedRounds,
    SharedVerdict,
    cluster_identity,
    decode_round,
    decode_snapshot,
    encode_snapshot,
)
from django_rwsplit.health.tracker import HealthSnapshot, Tracker

__all__ = [
    "DaemonPool",
    "SharedVerdict",
    "Monitor",
    "MonitorThread",
    "Readings",
    "SharedRounds",
    "cluster_identity",
    "decode_round",
    "decode_snapshot",
    "encode_snapshot",
    "measure",
    "tracker_for",
]

logger = logging.getLogger("django_rwsplit")


def measure(
    config: Config,
    databases: Mapping[str, Mapping[str, Any]],
    probe: Probe | None = None,
    pool: DaemonPool | None = None,
    system_id: str | None = None,
) -> Readings:
    """
    Measure the primary, then every replica at once, each within CHECK_TIMEOUT.

    The primary goes first so that a replica found at or past the primary's
    position is known to have been caught up when the primary was read.
    Replicas are checked in ``pool``, or in threads started for this call.
    """
    timeout = config.check_timeout
    primary_settings = databases[config.primary]
    probe = probe or probe_for(primary_settings)
    if nodes.lists_several(primary_settings):
        primary = _check_listed_primary(
            config, primary_settings, probe, pool, system_id
        )
    else:
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


def _check_listed_primary(
    config: Config,
    settings_dict: Mapping[str, Any],
    probe: Probe,
    pool: DaemonPool | None,
    system_id: str | None,
) -> PrimaryStatus:
    """
    A multi-host primary alias: find the node writes go to, then check it.

    Every listed node is asked its role at once (health.nodes); the primary
    check then runs on the chosen node alone, so positions are that node's.
    """
    timeout = config.check_timeout
    found = nodes.read_nodes(settings_dict, timeout, pool)
    choice = nodes.choose(found, system_id)
    if choice.node is None:
        status = probe.check_primary(config.primary, settings_dict, timeout)
        return replace(status, system_id=choice.system_id)
    status = probe.check_primary(
        config.primary, nodes.node_settings(settings_dict, choice.node), timeout
    )
    return replace(
        status,
        node=choice.node,
        timeline=choice.timeline,
        system_id=choice.system_id,
        fenced=tuple(FencedNode(r.node, r.timeline) for r in choice.fenced),
        nodes=nodes.roles(found, choice),
    )


def tracker_for(config: Config, databases: Mapping[str, Mapping[str, Any]]) -> Tracker:
    """Return a :class:`Tracker` of ``config``'s replicas, named by endpoint."""
    return Tracker(
        config,
        {alias: describe_endpoint(databases[alias]) for alias in config.replicas},
    )


class Monitor:
    """
    One cluster's rounds: measured (or borrowed) and fed to ``sink``.

    The rounds run in the process's :class:`MonitorThread` (``thread``), one
    every ``CHECK_INTERVAL`` of the cluster.
    """

    def __init__(
        self,
        config: Config,
        databases: Mapping[str, Mapping[str, Any]],
        sink: Callable[[PrimaryStatus, Sequence[ReplicaReading], float], None],
        verdict: Callable[[], HealthSnapshot] | None = None,
    ) -> None:
        self.config = config
        self.databases = databases
        self.sink = sink
        # This process's snapshot, shared after each round it measured.
        self.verdict = verdict
        self.first_round = threading.Event()
        self.rounds = 0
        self.shared = SharedRounds.of_cluster(config, databases)
        self.thread: MonitorThread | None = None
        self._last_id: Any = None
        # The cluster's system identifier, once a round saw its primary.
        self.system_id: str | None = None

    @property
    def stopping(self) -> threading.Event:
        """Set once the thread running this cluster's rounds is asked to stop."""
        assert self.thread is not None, "the monitor has no thread"
        return self.thread.stopping

    def is_alive(self) -> bool:
        """Return whether the thread running this cluster's rounds runs."""
        return self.thread is not None and self.thread.is_alive()

    def run_round(self, pool: DaemonPool | None = None) -> None:
        """Measure (or borrow) one round and hand it to the sink."""

        def measure_now() -> Readings:
            return measure(
                self.config, self.databases, pool=pool, system_id=self.system_id
            )

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
        self.system_id = primary.system_id or self.system_id
        self.sink(primary, readings, measured_at)
        shared, verdict = self.shared, self.verdict
        if shared is not None and verdict is not None and shared.owns(round_id):
            shared.publish_verdict(round_id, verdict())

    def guarded_round(self, pool: DaemonPool | None) -> None:
        """:meth:`run_round`, logging any failure (checks go on whatever happens)."""
        try:
            self.run_round(pool)
        except Exception:  # noqa: BLE001 - keep checking whatever happens
            logger.exception("Replica health round of %r failed.", self.config.name)
        finally:
            self.first_round.set()


class MonitorThread(threading.Thread):
    """The process's one health thread: the rounds of every cluster's Monitor."""

    def __init__(self, monitors: Sequence[Monitor]) -> None:
        super().__init__(name="django_rwsplit-health", daemon=True)
        self.monitors = list(monitors)
        self.stopping = threading.Event()
        for monitor in self.monitors:
            monitor.thread = self

    def run(self) -> None:
        pools = [DaemonPool(max(1, len(m.config.replicas))) for m in self.monitors]
        # Clusters due together are measured at once, a hung one delaying
        # no other's round (each round is bounded by its deadlines).
        clusters = (
            DaemonPool(len(self.monitors), "rwsplit-cluster")
            if len(self.monitors) > 1
            else None
        )
        due = [time.monotonic()] * len(self.monitors)
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                ready = [i for i, at in enumerate(due) if at <= now]
                for i in ready:
                    due[i] = now + self.monitors[i].config.check_interval
                if clusters is None or len(ready) < 2:
                    for i in ready:
                        self.monitors[i].guarded_round(pools[i])
                else:
                    clusters.map(
                        lambda i: self.monitors[int(i)].guarded_round(pools[int(i)]),
                        [str(i) for i in ready],
                    )
                self.stopping.wait(max(0.0, min(due) - time.monotonic()))
        finally:
            for pool in (*pools, *([clusters] if clusters else [])):
                pool.close()

    def stop(self) -> None:
        """Ask the thread to finish after its current rounds."""
        self.stopping.set()
