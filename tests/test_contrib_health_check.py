"""The django-health-check integration against the real cluster."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import path

from django_rwsplit import conf
from django_rwsplit.health import monitor
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.probes import PrimaryStatus
from django_rwsplit.health.tracker import HealthSnapshot, ReplicaStatus
from tests.utils import fast_health, rotation, start_health, wait_until

health_check = pytest.importorskip("health_check")
if not hasattr(health_check, "HealthCheck"):  # pragma: no cover
    pytest.skip("these tests cover django-health-check 4.x", allow_module_level=True)

from health_check.exceptions import ServiceUnavailable, ServiceWarning  # noqa: E402
from health_check.views import HealthCheckView  # noqa: E402

from django_rwsplit.contrib import health_check as rwsplit_check  # noqa: E402

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

FAST = fast_health()
CHECK = "django_rwsplit.contrib.health_check.ReadWriteSplit"
urlpatterns = [
    path("ht/", HealthCheckView.as_view(checks=[CHECK])),
    path("ht/warn/", HealthCheckView.as_view(checks=[(CHECK, {"warn": True})])),
]


def result(check: Any) -> Any:
    """Run a check as HealthCheckView does; return its error (None: healthy)."""
    return asyncio.run(check.get_result()).error


@override_settings(RWSPLIT=FAST, ROOT_URLCONF=__name__)
def test_healthy_cluster_checked_by_the_processes_monitor(cluster, monkeypatch):
    """A check starts the monitor once; later calls probe nothing themselves."""
    cluster.wait_caught_up()
    assert health_registry.current() is None
    probes = []
    real = monitor.measure

    def counted(*args, **kwargs):
        probes.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(monitor, "measure", counted)
    assert result(rwsplit_check.ReadWriteSplit()) is None
    state = health_registry.current()
    assert state is not None and state.monitor.rounds >= 1
    started, before = time.monotonic(), len(probes)
    for _ in range(20):
        assert result(rwsplit_check.ReadWriteSplit()) is None
    elapsed = time.monotonic() - started
    # Only the monitor's own rounds measured, one per interval at most.
    assert len(probes) - before <= elapsed / FAST["CHECK_INTERVAL"] + 1
    for check, options in rwsplit_check.checks():
        assert check == CHECK
        assert result(rwsplit_check.ReadWriteSplit(**options)) is None
    assert [o["alias"] for _, o in rwsplit_check.checks()] == [
        "default",
        "replica1",
        "replica2",
    ]
    response = Client().get("/ht/", {"format": "json"})
    assert response.status_code == 200
    assert list(response.json().values()) == ["OK"]

    text = Client().get("/ht/", {"format": "openmetrics"}).content.decode()
    assert 'django_health_check_status{check="ReadWriteSplit",warn="False"} 1' in text


@override_settings(RWSPLIT=FAST, ROOT_URLCONF=__name__)
def test_uses_the_running_monitor_and_reports_each_replica(cluster, monkeypatch):
    start_health()
    assert result(rwsplit_check.ReadWriteSplit()) is None

    cluster.stop_replica("replica1")
    wait_until(lambda: "replica1" not in rotation(), timeout=5)
    # Degraded, not down: the default check passes, a warning when asked.
    assert result(rwsplit_check.ReadWriteSplit()) is None
    error = result(rwsplit_check.ReadWriteSplit(warn=True))
    assert isinstance(error, ServiceWarning)
    assert "replica replica1 out of rotation" in error.message
    assert "127.0.0.1" not in error.message
    assert str(cluster.replicas[0].port) not in error.message
    assert isinstance(
        result(rwsplit_check.ReadWriteSplit(alias="replica1")), ServiceWarning
    )
    assert result(rwsplit_check.ReadWriteSplit(alias="replica2")) is None
    assert result(rwsplit_check.ReadWriteSplit(alias="default")) is None
    assert Client().get("/ht/", {"format": "json"}).status_code == 200
    assert Client().get("/ht/warn/", {"format": "json"}).status_code == 500

    cluster.stop_replica("replica2")
    wait_until(lambda: not rotation(), timeout=5)
    error = result(rwsplit_check.ReadWriteSplit())
    assert isinstance(error, ServiceUnavailable)
    assert error.message.startswith("no replica in rotation: replica1 (")
    assert error.message.count("no replica in rotation") == 1
    for alias in ("replica1", "replica2"):
        unavailable = result(rwsplit_check.ReadWriteSplit(alias=alias))
        assert isinstance(unavailable, ServiceUnavailable)
    assert result(rwsplit_check.ReadWriteSplit(alias="default")) is None
    response = Client().get("/ht/", {"format": "json"})
    assert response.status_code == 500
    assert (
        "no replica in rotation"
        in response.json()[repr(rwsplit_check.ReadWriteSplit())]
    )


@override_settings(RWSPLIT=FAST)
def test_unknown_alias_is_unavailable(cluster):
    error = result(rwsplit_check.ReadWriteSplit(alias="nope"))
    assert isinstance(error, ServiceUnavailable)
    assert "'nope' is not in RWSPLIT" in error.message


@override_settings(RWSPLIT=FAST)
def test_unreachable_primary_is_critical():
    config = conf.get_config()
    primary = PrimaryStatus(
        alias="default",
        endpoint="127.0.0.1:1",
        reachable=False,
        error='connection to server at "127.0.0.1", port 1 failed: refused',
        checked_at=0.0,
    )
    replicas = tuple(
        ReplicaStatus(alias, "127.0.0.1:2", True, lag_seconds=0.0)
        for alias in ("replica1", "replica2")
    )
    findings = rwsplit_check.findings_of(HealthSnapshot(primary, replicas), config)
    (finding,) = findings
    assert finding.alias == "default" and finding.critical
    assert finding.message.startswith("primary default unreachable: ")
    assert "127.0.0.1" not in finding.message

    in_recovery = PrimaryStatus(
        alias="default", endpoint="h:1", reachable=True, in_recovery=True, checked_at=0
    )
    (finding,) = rwsplit_check.findings_of(
        HealthSnapshot(in_recovery, replicas), config
    )
    assert finding.critical and "in recovery" in finding.message
