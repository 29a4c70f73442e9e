"""
Prometheus metrics for the router and the health monitor (``[prometheus]`` extra).

Call :func:`install` once (``RWSPLIT["METRICS"] = True`` does it at start-up)
and expose ``prometheus_client.REGISTRY`` as usual: with
``prometheus_client.start_http_server``, ``make_wsgi_app`` or
django-prometheus' ``/metrics`` view, which serves the same default registry.

Counting a routed read is one increment in a per-thread dict, with no lock
and no lost updates (about 0.15 µs, against 1.2 µs for prometheus_client's
``Counter.labels(...).inc()``). The counters and the per-replica gauges are
built when the registry is scraped.
Values are per process: each worker of a pre-fork server reports its own.
With prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``),
which does not read custom collectors, the same values are also written to
its files every second (:mod:`django_rwsplit.metrics_multiprocess`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_rwsplit import conf, forks, metrics_multiprocess, observe, signals
from django_rwsplit.health import load
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.reasons import Reason

__all__ = ["EJECTION_REASONS", "install", "normalise_reason", "uninstall"]

EJECTION_REASONS = tuple(reason.value for reason in Reason)


def normalise_reason(reason: object) -> str:
    """Map a free-text ejection reason to one of :data:`EJECTION_REASONS`."""
    return Reason.of_text(reason).value


_FOLD_AT = 64


class _ThreadCounts(threading.local):
    """This thread's read and pin counts, registered with their owner once."""

    def __init__(self, owner: CountingObserver) -> None:
        self.reads: dict[tuple[str, str | None], int] = {}
        self.pins: dict[str, int] = {}
        owner._adopt(self.reads, self.pins)


class CountingObserver:
    """An :class:`~django_rwsplit.observe.Observer` counting into plain dicts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        forks.renew_after_fork(self)
        self._live: list[
            tuple[
                weakref.ref[threading.Thread],
                dict[tuple[str, str | None], int],
                dict[str, int],
            ]
        ] = []
        self._retired_reads: Counter[tuple[str, str | None]] = Counter()
        self._retired_pins: Counter[str] = Counter()
        # Fold finished threads when a new one registers and this many are
        # kept: under ASGI (a thread per request) without scrapes, the list
        # would otherwise grow by one per thread for ever.
        self._fold_at = _FOLD_AT
        self._local = _ThreadCounts(self)
        self.ejections: Counter[tuple[str, str]] = Counter()
        self.retries: Counter[tuple[str, str]] = Counter()
        # Queries answered by a substitute server, by (alias, server).
        self.substituted: Counter[tuple[str, str]] = Counter()
        # Moves of a multi-host primary alias's writes to another node.
        self.primary_changes: Counter[str] = Counter()
        self.lost_writes: Counter[str] = Counter()
        self.not_visible: Counter[str] = Counter()
        self.readmissions: Counter[str] = Counter()
        self._out: set[str] = set()

    def _adopt(
        self, reads: dict[tuple[str, str | None], int], pins: dict[str, int]
    ) -> None:
        with self._lock:
            if len(self._live) >= self._fold_at:
                self._fold_finished()
                self._fold_at = max(_FOLD_AT, 2 * len(self._live))
            self._live.append((weakref.ref(threading.current_thread()), reads, pins))

    @property
    def tracked_threads(self) -> int:
        """How many threads' counts are kept apart (live ones, a few finished)."""
        return len(self._live)

    def _fold_finished(self) -> None:
        """Add finished threads' counts to the retired sums (under the lock)."""
        live = []
        for ref, reads, pins in self._live:
            thread = ref()
            if thread is None or not thread.is_alive():
                # A finished thread cannot count again: keep its sums only.
                self._retired_reads.update(reads.copy())
                self._retired_pins.update(pins.copy())
            else:
                live.append((ref, reads, pins))
        self._live = live

    def read(self, alias: str, reason: str | None) -> None:
        """Count a routed read (hot path: no lock, one dict update)."""
        reads = self._local.reads
        key = (alias, reason)
        reads[key] = reads.get(key, 0) + 1

    def pin(self, reason: str) -> None:
        """Count a pin to the primary."""
        pins = self._local.pins
        pins[reason] = pins.get(reason, 0) + 1

    def totals(self) -> tuple[Counter[tuple[str, str | None]], Counter[str]]:
        """Return the read and pin counts of every thread, folding dead threads."""
        with self._lock:
            self._fold_finished()
            read_totals = Counter(self._retired_reads)
            pin_totals = Counter(self._retired_pins)
            for _, reads, pins in self._live:
                read_totals.update(reads.copy())
                pin_totals.update(pins.copy())
        return read_totals, pin_totals

    def ejected(
        self,
        alias: str,
        reason: object = None,
        kind: Reason | None = None,
        **kwargs: Any,
    ) -> None:
        """Receiver of :data:`~django_rwsplit.signals.replica_ejected`."""
        label = (kind or Reason.of_text(reason)).value
        with self._lock:
            self.ejections[(alias, label)] += 1
            self._out.add(alias)

    def served_by(self, alias: str, server: str) -> None:
        """A query routed to ``alias`` was answered by ``server`` (failover)."""
        with self._lock:
            self.substituted[(alias, server)] += 1

    def primary_changed(self, alias: str, **kwargs: Any) -> None:
        """Receiver of :data:`~django_rwsplit.signals.primary_changed`."""
        with self._lock:
            self.primary_changes[alias] += 1

    def visibility_timed_out(self, replicas: tuple[str, ...], **kwargs: Any) -> None:
        """Receiver of :data:`~django_rwsplit.signals.visibility_timed_out`."""
        with self._lock:
            self.not_visible.update(replicas)

    def write_lost(self, cluster: str, **kwargs: Any) -> None:
        """Receiver of :data:`~django_rwsplit.signals.write_lost`."""
        with self._lock:
            self.lost_writes[cluster] += 1

    def retried(self, alias: str, reason: str = "other", **kwargs: Any) -> None:
        """Receiver of :data:`~django_rwsplit.signals.read_retried`."""
        with self._lock:
            self.retries[(alias, str(reason))] += 1

    def readmitted(self, alias: str, **kwargs: Any) -> None:
        """
        Receiver of :data:`~django_rwsplit.signals.replica_readmitted`.

        Only a return after an ejection counts: the signal is also sent when
        a replica first enters rotation after the monitor starts.
        """
        with self._lock:
            if alias in self._out:
                self._out.discard(alias)
                self.readmissions[alias] += 1


class RwsplitCollector:
    """Build the ``rwsplit_*`` metric families at scrape time."""

    def __init__(self, counts: CountingObserver) -> None:
        self.counts = counts

    def describe(self) -> list[Any]:
        """Return nothing, so registering does not run a scrape."""
        return []

    def collect(self) -> Iterator[Any]:
        """Yield the gauges of the current health snapshot and the counters."""
        from prometheus_client.core import GaugeMetricFamily

        config = conf.config_or_none()
        clusters = config.every_cluster() if config else ()
        primaries = [c.primary for c in clusters]
        replicas = [alias for c in clusters for alias in c.replicas]
        cluster_of = {a: c.name for c in clusters for a in (c.primary, *c.replicas)}
        # A cluster label only with several clusters: one cluster's series
        # stay as they always were.
        several = bool(config and config.clusters)
        label_names = ["alias", "cluster"] if several else ["alias"]

        def labels_of(alias: str) -> list[str]:
            return [alias, cluster_of.get(alias, "default")] if several else [alias]

        gauges = {
            "lag_seconds": GaugeMetricFamily(
                "rwsplit_replica_lag_seconds",
                "Replay lag of the replica in seconds at the last health check.",
                labels=label_names,
            ),
            "lag_bytes": GaugeMetricFamily(
                "rwsplit_replica_lag_bytes",
                "WAL bytes the replica had yet to replay at the last health check.",
                labels=label_names,
            ),
            "in_rotation": GaugeMetricFamily(
                "rwsplit_replica_in_rotation",
                "1 when the replica serves reads, 0 when it is out of rotation.",
                labels=label_names,
            ),
            "latency": GaugeMetricFamily(
                "rwsplit_replica_check_latency_seconds",
                "Duration of the last health check query on the replica.",
                labels=label_names,
            ),
            "average": GaugeMetricFamily(
                "rwsplit_replica_latency_average_seconds",
                "This process's decaying peak average of query latency on the "
                "replica (the adaptive balancer's latency input).",
                labels=label_names,
            ),
            "outstanding": GaugeMetricFamily(
                "rwsplit_replica_outstanding_queries",
                "Queries of this process running on the replica now.",
                labels=label_names,
            ),
        }
        # Every health figure is read off the one health document of each
        # cluster (HealthSnapshot), as the endpoint, page and command do.
        snapshots = [
            (state.config, state.snapshot())
            for state in health_registry.every_cluster()
        ]
        for _, snapshot in snapshots:
            for status in snapshot.replicas:
                labels = labels_of(status.alias)
                rotating = 1.0 if status.in_rotation else 0.0
                gauges["in_rotation"].add_metric(labels, rotating)
                if status.lag_seconds is not None:
                    gauges["lag_seconds"].add_metric(labels, status.lag_seconds)
                if status.lag_bytes is not None:
                    gauges["lag_bytes"].add_metric(labels, float(status.lag_bytes))
                if status.latency_ms is not None:
                    gauges["latency"].add_metric(labels, status.latency_ms / 1000.0)
        now = time.perf_counter()
        for alias in replicas:
            labels = labels_of(alias)
            server = load.of(alias)
            average = server.latency_ms(now)
            if average is not None:
                gauges["average"].add_metric(labels, average / 1000.0)
            gauges["outstanding"].add_metric(labels, float(server.outstanding))
        yield from gauges.values()

        reads, pins = self.counts.totals()
        per_alias: Counter[str] = Counter(
            dict.fromkeys([a for a in (*primaries, *replicas) if a], 0)
        )
        primary_reasons: Counter[str] = Counter()
        for (alias, reason), count in reads.items():
            per_alias[alias] += count
            if reason is not None:
                primary_reasons[reason] += count
            elif alias in primaries:
                primary_reasons["fallback"] += count
        yield _counter(
            "rwsplit_reads", "Reads routed, by database alias.", "alias", per_alias
        )
        yield _counter(
            "rwsplit_primary_reads",
            "Reads sent to the primary, by reason (fallback: no replica in rotation).",
            "reason",
            primary_reasons,
        )
        yield _counter(
            "rwsplit_pins", "Pins to the primary that began, by reason.", "reason", pins
        )
        with self.counts._lock:
            ejections = Counter(self.counts.ejections)
            retries = Counter(self.counts.retries)
            substituted = Counter(self.counts.substituted)
            primary_changes = Counter(self.counts.primary_changes)
            lost_writes = Counter(self.counts.lost_writes)
            not_visible = Counter(self.counts.not_visible)
            readmissions: Counter[str] = Counter(dict.fromkeys(replicas, 0))
            readmissions.update(self.counts.readmissions)
        yield _counter_by_two(
            "rwsplit_replica_ejections",
            "Times a replica left the read rotation, by normalised reason.",
            ("alias", "reason"),
            ejections,
        )
        yield _counter_by_two(
            "rwsplit_read_retries",
            "Failed autocommit reads on a replica run again elsewhere, by the "
            "alias they were routed to and reason (recovery_conflict, "
            "server_shutdown, connection_broken).",
            ("alias", "reason"),
            retries,
        )
        yield _counter(
            "rwsplit_primary_changes",
            "Times the writes of a primary alias listing several nodes moved "
            "to another node (a failover or switchover).",
            "alias",
            primary_changes,
        )
        yield _counter(
            "rwsplit_lost_writes",
            "Writes named by clients' read-your-writes tokens that the primary's "
            "timeline does not hold (lost in a failover), once per write and "
            "process, by cluster.",
            "cluster",
            lost_writes,
        )
        yield _counter(
            "rwsplit_visibility_timeouts",
            "Commits made in visible_on_replicas() that the replica had not "
            "applied within VISIBLE_WAIT (it then serves no read until it has).",
            "alias",
            not_visible,
        )
        writable = GaugeMetricFamily(
            "rwsplit_primary_writable_nodes",
            "Nodes of a primary alias that accept writes at the last round "
            "(more than 1: an old primary is back; it is fenced).",
            labels=label_names,
        )
        for cluster, snapshot in snapshots:
            found = snapshot.primary
            if found is not None and found.node is not None and found.reachable:
                count = 1 + len(found.fenced)
                writable.add_metric(labels_of(cluster.primary), float(count))
        yield writable
        yield _counter_by_two(
            "rwsplit_substituted_queries",
            "Queries routed to a replica alias that another server answered "
            "(the read planner's substitute while the replica is unusable), by "
            "alias and the server that answered.",
            ("alias", "server"),
            substituted,
        )
        yield _counter(
            "rwsplit_replica_readmissions",
            "Times a replica rejoined the read rotation.",
            "alias",
            readmissions,
        )


def _counter(name: str, documentation: str, label: str, values: Counter[str]) -> Any:
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, count in sorted(values.items()):
        family.add_metric([key], count)
    return family


def _counter_by_two(
    name: str,
    documentation: str,
    labels: tuple[str, str],
    values: Counter[tuple[str, str]],
) -> Any:
    """A counter family with two labels (``values`` keyed by both)."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for (first, second), count in sorted(values.items()):
        family.add_metric([first, second], count)
    return family


_lock = threading.Lock()
forks.renew_after_fork(sys.modules[__name__])
_observer: CountingObserver | None = None
_collectors: dict[int, tuple[Any, RwsplitCollector]] = {}
_sync: metrics_multiprocess.MultiprocessSync | None = None
_DISPATCH_UID = "django_rwsplit.metrics"


_fork_hook_registered = False


def _restart_sync() -> None:
    """In a forked child (a gunicorn worker): the sync thread did not survive."""
    if _sync is not None:
        _sync.start()


def install(registry: Any = None) -> None:
    """
    Count routed reads, pins and rotation changes and export them to ``registry``.

    ``registry`` defaults to ``prometheus_client.REGISTRY``. Calling again is
    harmless; calling with another registry exports the same counts there too.
    """
    global _observer
    try:
        import prometheus_client
    except ImportError:
        raise ImproperlyConfigured(
            "django_rwsplit.metrics needs prometheus-client: "
            "pip install django-rwsplit[prometheus]"
        ) from None
    target = prometheus_client.REGISTRY if registry is None else registry
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_restart_sync)
        _fork_hook_registered = True
    with _lock:
        if _observer is None:
            _observer = CountingObserver()
        counts = _observer
        observe.subscribe(counts)
        signals.replica_ejected.connect(
            counts.ejected, weak=False, dispatch_uid=_DISPATCH_UID
        )
        signals.replica_readmitted.connect(
            counts.readmitted, weak=False, dispatch_uid=_DISPATCH_UID
        )
        signals.read_retried.connect(
            counts.retried, weak=False, dispatch_uid=_DISPATCH_UID
        )
        signals.primary_changed.connect(
            counts.primary_changed, weak=False, dispatch_uid=_DISPATCH_UID
        )
        signals.write_lost.connect(
            counts.write_lost, weak=False, dispatch_uid=_DISPATCH_UID
        )
        signals.visibility_timed_out.connect(
            counts.visibility_timed_out, weak=False, dispatch_uid=_DISPATCH_UID
        )
        if id(target) not in _collectors:
            collector = RwsplitCollector(counts)
            target.register(collector)
            _collectors[id(target)] = (target, collector)
        global _sync
        if _sync is None and metrics_multiprocess.enabled():
            _sync = metrics_multiprocess.MultiprocessSync(
                RwsplitCollector(counts).collect
            )
            _sync.start()


def uninstall() -> None:
    """Undo :func:`install`: stop counting, unregister, forget the counts."""
    global _observer
    with _lock:
        counts = _observer
        if counts is not None:
            observe.unsubscribe(counts)
        signals.replica_ejected.disconnect(dispatch_uid=_DISPATCH_UID)
        signals.replica_readmitted.disconnect(dispatch_uid=_DISPATCH_UID)
        signals.primary_changed.disconnect(dispatch_uid=_DISPATCH_UID)
        signals.write_lost.disconnect(dispatch_uid=_DISPATCH_UID)
        signals.visibility_timed_out.disconnect(dispatch_uid=_DISPATCH_UID)
        signals.read_retried.disconnect(dispatch_uid=_DISPATCH_UID)
        for target, collector in _collectors.values():
            target.unregister(collector)
        _collectors.clear()
        _observer = None
        global _sync
        if _sync is not None:
            _sync.stop()
            _sync = None
