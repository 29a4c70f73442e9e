"""
prometheus_client's multiprocess mode for the ``rwsplit_*`` metrics.

With ``PROMETHEUS_MULTIPROC_DIR`` set (as django-prometheus users run
gunicorn), a scrape reads the files every worker writes, and custom
collectors are not consulted. :class:`MultiprocessSync` copies this process's
counts and gauges into prometheus_client metrics, which write those files,
every :data:`SYNC_SECONDS` from a daemon thread (again in a forked child),
never on the read path. Counters add up across workers; gauges are
aggregated over live workers as :data:`GAUGE_MODES` says.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ENV", "GAUGE_MODES", "SYNC_SECONDS", "MultiprocessSync", "enabled"]

ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_SECONDS = 1.0
# How a scrape combines the workers' values (prometheus_client's modes; the
# "live" ones forget a worker once gunicorn's child_exit hook marks it dead).
GAUGE_MODES = {
    "rwsplit_replica_in_rotation": "livemin",  # 0 if any worker has it out
    "rwsplit_replica_outstanding_queries": "livesum",  # the fleet's total
}
DEFAULT_GAUGE_MODE = "livemax"  # lag, check latency, latency average: the worst


def enabled() -> bool:
    """Return whether prometheus_client's multiprocess mode is on."""
    return bool(os.environ.get(ENV))


class MultiprocessSync:
    """Copy the families ``collect`` yields into multiprocess-backed metrics."""

    def __init__(
        self, collect: Callable[[], Iterable[Any]], interval: float = SYNC_SECONDS
    ) -> None:
        self.collect = collect
        self.interval = interval
        self._metrics: dict[str, Any] = {}
        # Per counter sample (name, labels): the total already written.
        self._sent: dict[tuple[str, tuple[str, ...]], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sync thread (in this process; forks start their own)."""
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="django_rwsplit-metrics-sync", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sync()

    def sync(self) -> None:
        """Write the current values: counter deltas, gauge values."""
        with self._lock:
            for family in self.collect():
                for sample in family.samples:
                    self._write(family, sample)

    def _write(self, family: Any, sample: Any) -> None:
        labels = tuple(sample.labels[name] for name in sorted(sample.labels))
        metric = self._metric(family, sorted(sample.labels))
        child = metric.labels(*labels) if labels else metric
        if family.type == "counter":
            if not sample.name.endswith("_total"):
                return  # the _created sample
            key = (sample.name, labels)
            delta = sample.value - self._sent.get(key, 0.0)
            if delta > 0:
                child.inc(delta)
                self._sent[key] = sample.value
        else:
            child.set(sample.value)

    def _metric(self, family: Any, labelnames: list[str]) -> Any:
        metric = self._metrics.get(family.name)
        if metric is None:
            from prometheus_client import Counter, Gauge

            if family.type == "counter":
                metric = Counter(
                    family.name, family.documentation, labelnames, registry=None
                )
            else:
                mode: Any = GAUGE_MODES.get(family.name, DEFAULT_GAUGE_MODE)
                metric = Gauge(
                    family.name,
                    family.documentation,
                    labelnames,
                    registry=None,
                    multiprocess_mode=mode,
                )
            self._metrics[family.name] = metric
        return metric
