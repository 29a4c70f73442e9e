"""Prometheus metrics against the real cluster: routed reads, pins, ejections."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router, transaction
from django.test import override_settings

from django_rwsplit import metrics, observe, pin_primary, pinning
from tests.testapp.models import Item
from tests.utils import fast_health, start_health, wait_until

prometheus_client = pytest.importorskip("prometheus_client")

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

FAST = fast_health(MAX_LAG_SECONDS=5.0)


@pytest.fixture
def prom():
    """A fresh CollectorRegistry with the rwsplit metrics installed."""
    registry = prometheus_client.CollectorRegistry()
    metrics.install(registry)
    yield registry
    metrics.uninstall()


def value(registry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_normalise_reason():
    assert metrics.normalise_reason("lag 3.10 s over 0.5 s") == "lag"
    assert metrics.normalise_reason("lag unknown") == "lag"
    assert metrics.normalise_reason("unreachable: timeout after 500 ms") == (
        "unreachable"
    )
    assert metrics.normalise_reason("not in recovery (promoted?)") == (
        "not_in_recovery"
    )
    assert metrics.normalise_reason("WAL receiver not streaming") == "not_streaming"
    assert metrics.normalise_reason("connection failed: refused") == (
        "connection_failed"
    )
    assert metrics.normalise_reason("something new") == "other"
    assert metrics.normalise_reason(None) == "other"


def test_install_is_idempotent_and_uninstall_restores_the_listeners():
    assert observe.listeners == ()
    registry = prometheus_client.CollectorRegistry()
    metrics.install(registry)
    installed = observe.listeners
    metrics.install(registry)
    assert observe.listeners == installed and len(installed) == 1
    assert len(list(registry.collect())) == 17  # registered once
    metrics.uninstall()
    assert observe.listeners == ()
    assert list(registry.collect()) == []


def test_an_existing_listener_keeps_receiving_events():
    seen: list[tuple[str, str | None]] = []

    class Mine:
        def read(self, alias: str, reason: str | None) -> None:
            seen.append((alias, reason))

        def pin(self, reason: str) -> None:
            seen.append(("pin", reason))

    mine = Mine()
    observe.subscribe(mine)
    try:
        registry = prometheus_client.CollectorRegistry()
        metrics.install(registry)
        assert len(observe.listeners) == 2
        observe.read("replica1", None)
        observe.pin("cookie")
        assert seen == [("replica1", None), ("pin", "cookie")]
        assert value(registry, "rwsplit_pins_total", reason="cookie") == 1
        metrics.uninstall()
        assert observe.listeners == (mine,)
    finally:
        observe.unsubscribe(mine)
    assert observe.listeners == ()


def test_missing_prometheus_client_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_prometheus(name, *args, **kwargs):
        if name.startswith("prometheus_client"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_prometheus)
    with pytest.raises(ImproperlyConfigured, match=r"django-rwsplit\[prometheus\]"):
        metrics.install()
    assert observe.listeners == ()


@override_settings(RWSPLIT=FAST)
def test_routed_reads_pins_and_gauges(cluster, prom):
    start_health()
    before = sum(
        value(prom, "rwsplit_reads_total", alias=a) for a in ("replica1", "replica2")
    )
    for _ in range(10):
        router.db_for_read(Item)
    with pin_primary():
        for _ in range(3):
            router.db_for_read(Item)
    with transaction.atomic():
        Item.objects.count()
        router.db_for_read(Item)
    token = pinning._scope.set(pinning.Scope())
    try:
        Item.objects.create(name="pins the scope")
        router.db_for_read(Item)
    finally:
        pinning._scope.reset(token)

    def read_in_thread() -> None:
        for _ in range(25):
            router.db_for_read(Item)

    threads = [threading.Thread(target=read_in_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    replica_reads = sum(
        value(prom, "rwsplit_reads_total", alias=a) for a in ("replica1", "replica2")
    )
    assert replica_reads - before == 10 + 4 * 25
    assert value(prom, "rwsplit_primary_reads_total", reason="pin_primary") == 3
    assert value(prom, "rwsplit_pins_total", reason="pin_primary") == 1
    assert value(prom, "rwsplit_primary_reads_total", reason="transaction") == 2
    assert value(prom, "rwsplit_primary_reads_total", reason="write") == 1
    assert value(prom, "rwsplit_pins_total", reason="write") == 1
    assert value(prom, "rwsplit_reads_total", alias="default") == 3 + 2 + 1
    assert value(prom, "rwsplit_primary_reads_total", reason="fallback") == 0
    # Dead threads were folded into the totals; a second scrape agrees.
    assert (
        sum(
            value(prom, "rwsplit_reads_total", alias=a)
            for a in ("replica1", "replica2")
        )
        == replica_reads
    )

    for alias in ("replica1", "replica2"):
        assert value(prom, "rwsplit_replica_in_rotation", alias=alias) == 1
        assert (
            prom.get_sample_value("rwsplit_replica_lag_seconds", {"alias": alias}) < 5
        )
        assert prom.get_sample_value("rwsplit_replica_lag_bytes", {"alias": alias}) >= 0
        latency = prom.get_sample_value(
            "rwsplit_replica_check_latency_seconds", {"alias": alias}
        )
        assert 0 < latency < 0.5
        average = prom.get_sample_value(
            "rwsplit_replica_latency_average_seconds", {"alias": alias}
        )
        assert 0 < average < 0.5  # the reads above were measured
        assert value(prom, "rwsplit_replica_outstanding_queries", alias=alias) == 0
        # First admissions after start-up are not readmissions.
        assert value(prom, "rwsplit_replica_readmissions_total", alias=alias) == 0
    text = prometheus_client.generate_latest(prom).decode()
    assert 'rwsplit_reads_total{alias="replica1"}' in text


@override_settings(RWSPLIT=FAST)
def test_ejection_fallback_and_readmission_are_counted(cluster, prom):
    start_health()
    cluster.stop_replica("replica1")
    wait_until(
        lambda: value(prom, "rwsplit_replica_in_rotation", alias="replica1") == 0,
        timeout=5,
    )

    # The gauge reads the tracker; the counter, its signal's receiver, just after.
    def ejections() -> float:
        return value(
            prom,
            "rwsplit_replica_ejections_total",
            alias="replica1",
            reason="unreachable",
        ) + value(
            prom,
            "rwsplit_replica_ejections_total",
            alias="replica1",
            reason="connection_failed",
        )

    wait_until(ejections, timeout=5)
    assert ejections() == 1
    assert prom.get_sample_value(
        "rwsplit_replica_lag_seconds", {"alias": "replica1"}
    ) is (None)
    assert value(prom, "rwsplit_replica_in_rotation", alias="replica2") == 1

    cluster.stop_replica("replica2")
    wait_until(
        lambda: value(prom, "rwsplit_replica_in_rotation", alias="replica2") == 0,
        timeout=5,
    )
    for _ in range(5):
        assert router.db_for_read(Item) == "default"
    assert value(prom, "rwsplit_primary_reads_total", reason="fallback") == 5

    cluster.start_replica("replica1")
    wait_until(
        lambda: (
            value(prom, "rwsplit_replica_readmissions_total", alias="replica1") == 1
        ),
        timeout=15,
    )
    assert value(prom, "rwsplit_replica_in_rotation", alias="replica1") == 1


def test_a_query_a_substitute_answered_is_counted_by_that_server(cluster, prom):
    """Metrics saw only the routed alias, not the server that answered."""
    start_health()
    connections["replica1"].close()
    cluster.stop_replica("replica1")
    with connections["replica1"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.execute("SELECT 2")
    server = connections["replica1"].substitute_for
    assert server in ("replica2", "default")
    counted = value(
        prom, "rwsplit_substituted_queries_total", alias="replica1", server=server
    )
    assert counted == 2


def test_metrics_setting_installs_at_start_up():
    from django_rwsplit import apps

    with override_settings(RWSPLIT={**FAST, "METRICS": False}):
        apps._install_metrics()
        assert observe.listeners == ()
    with override_settings(RWSPLIT={**FAST, "METRICS": True}):
        apps._install_metrics()
        try:
            (listener,) = observe.listeners
            assert isinstance(listener, metrics.CountingObserver)
            names = {m.name for m in prometheus_client.REGISTRY.collect()}
            assert "rwsplit_reads" in names
        finally:
            metrics.uninstall()


def test_finished_threads_are_folded_without_a_scrape():
    """A thread per request (ASGI) and no scrape: the kept counts stay bounded."""
    counter = metrics.CountingObserver()
    for _ in range(500):
        thread = threading.Thread(target=counter.read, args=("replica1", None))
        thread.start()
        thread.join()
    assert counter.tracked_threads <= 2 * 64
    reads, _ = counter.totals()
    assert reads[("replica1", None)] == 500
