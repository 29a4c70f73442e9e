"""
The rotation expires when health rounds stop (health.state, health.monitor).

On the real cluster: a replica paused behind a writing primary while the
monitor cannot produce rounds must leave the reads within the stated bound,
and the health endpoint must say why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connections, router
from django.test import Client, override_settings
from django.urls import include, path

from django_rwsplit import conf, pinning
from django_rwsplit.health import monitor
from django_rwsplit.health import registry as health_registry
from django_rwsplit.testing.cluster import LocalCluster
from tests.ports import free_port
from tests.testapp.models import Item
from tests.utils import fast_health, rotation, start_health, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

urlpatterns = [path("rwsplit/", include("django_rwsplit.urls"))]
TOKEN = "a-token-long-enough-for-the-check"
FAST = fast_health(MAX_LAG_SECONDS=1.0, HEALTH_ENDPOINT_TOKEN=TOKEN)


def health_document() -> tuple[int, dict[str, Any]]:
    response = Client().get(
        "/rwsplit/health/", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    return response.status_code, response.json()


def reads_left(cluster: LocalCluster, alias: str, bound: float) -> float:
    """Write on the primary until reads leave ``alias``; return the seconds it took."""
    started = time.monotonic()

    def gone() -> bool:
        Item.objects.create(name="tick")
        pinning.forget_unscoped_write()
        return alias not in rotation()

    wait_until(gone, timeout=bound + 5)
    return time.monotonic() - started


@override_settings(RWSPLIT=FAST, ROOT_URLCONF=__name__)
def test_reads_leave_the_replicas_when_rounds_stop(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A monitor stuck in a round (here: a probe that never returns)."""
    state = start_health()
    stuck, released = threading.Event(), threading.Event()
    real = monitor.measure

    def never_returns(*args: Any, **kwargs: Any) -> Any:
        stuck.set()
        released.wait(60)  # until the test ends
        return real(*args, **kwargs)

    monkeypatch.setattr(monitor, "measure", never_returns)
    try:
        assert stuck.wait(5)
        check_fails_closed(cluster, state)
    finally:
        released.set()


def check_fails_closed(
    cluster: LocalCluster, state: health_registry.ProcessHealth
) -> None:
    cluster.pause_replay("replica1")
    took = reads_left(cluster, "replica1", state.stale_after)
    assert took <= state.stale_after + 1.0, f"{took:.2f} s"
    assert rotation() == frozenset()  # fail closed: both replicas left
    connections.close_all()
    pinning.forget_unscoped_write()
    assert router.db_for_read(Item) == "default"  # FALLBACK="primary"
    status, document = health_document()
    assert status == 503 and document["status"] == "critical"
    assert document["round_age_seconds"] > state.stale_after
    assert health_registry.snapshot() is not None
    summary = (
        Client()
        .get("/rwsplit/status/data/", headers={"Authorization": f"Bearer {TOKEN}"})
        .json()["summary"]
    )
    assert "no health round for" in summary


@pytest.fixture
def redis_port(tmp_path: Any) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A Redis server of this test's own, on a loopback port below 32768."""
    port = free_port(range(18600, 18700))
    server = subprocess.Popen(
        [
            "redis-server",
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port, socket_timeout=1)
        wait_until(lambda: _pings(client), timeout=10)
        yield port, server
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait(timeout=10)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_a_hung_health_cache_does_not_freeze_the_rotation(
    cluster: LocalCluster, redis_port: tuple[int, subprocess.Popen[bytes]]
) -> None:
    """HEALTH_CACHE on a Redis that stops answering (SIGSTOP): rounds go on locally."""
    port, server = redis_port
    shared_cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{port}/0",
    }
    from django.conf import settings

    with override_settings(
        CACHES={**settings.CACHES, "stalls": shared_cache},
        RWSPLIT={**FAST, "HEALTH_CACHE": "stalls"},
        ROOT_URLCONF=__name__,
    ):
        caches["stalls"].clear()
        state = start_health()
        assert state.monitor.shared is not None
        wait_until(lambda: state.monitor.shared.measured >= 2, timeout=10)
        os.kill(server.pid, signal.SIGSTOP)
        cluster.pause_replay("replica1")
        bound = conf.get_config().max_lag_seconds + state.stale_after
        took = reads_left(cluster, "replica1", bound)
        assert took <= bound + 1.0, f"{took:.2f} s"
        # Checks go on (measured here), so replica2 stays and says why replica1 left.
        assert "replica2" in rotation()
        status, document = health_document()
        assert status == 200 and document["status"] == "warning"
        (replica1,) = [r for r in document["replicas"] if r["alias"] == "replica1"]
        assert "lag" in replica1["error"]
        assert document["round_age_seconds"] < state.stale_after
