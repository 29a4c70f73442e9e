"""
A failing receiver or cache never turns a healthy request into a failure
(issue 22): ``read_retried`` receivers that raise, a ``USER_PIN_CACHE`` that
hangs, and the ``django.tasks`` integration with a cache that is down or hung.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.test import override_settings

from django_rwsplit import signals
from tests.test_token_header import CookielessClient
from tests.testapp.models import Item
from tests.utils import fast_health, server_port, start_health

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

TIMEOUT = 0.5
# A request makes one user-pin cache call, bounded by CHECK_TIMEOUT (0.5 s);
# 2.5 s of slack for a busy 2-core machine. Unbounded, redis-py's own socket
# timeout (5 s) held each request here for 5 s.
REQUEST_BOUND = 3.0
# An enqueue and its task make three bounded cache calls.
TASK_BOUND = 10.0


@pytest.fixture
def hung_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a frozen Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield listener.getsockname()[1]
    listener.close()  # the hung calls' sockets are reset: their threads end


@pytest.fixture
def dead_port() -> int:
    """A port nothing listens on (a Redis that is down)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def redis_at(port: int) -> dict[str, object]:
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "broken": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
        },
    }


def run_with_deadline(func, seconds: float = 60.0):
    """Run ``func`` in a thread; fail (not hang) if it outlives ``seconds``."""
    outcome: dict[str, object] = {}

    def target() -> None:
        started = time.monotonic()
        try:
            outcome["value"] = func()
        except BaseException as error:  # noqa: BLE001 - reported below
            outcome["error"] = error
        finally:
            connections.close_all()  # this thread's: none may outlive the test
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"], outcome["elapsed"]


def test_a_raising_read_retried_receiver_does_not_fail_the_retried_read(cluster, ports):
    def broken(sender, **kwargs):
        raise RuntimeError("metrics receiver broke")

    with override_settings(RWSPLIT=fast_health()):
        start_health()
        assert server_port("replica1") == ports["replica1"]
        cluster.stop_replica("replica1")
        signals.read_retried.connect(broken, weak=False)
        try:
            port = server_port("replica1")  # the broken connection: retried
        finally:
            signals.read_retried.disconnect(broken)
    assert port in (ports["replica2"], ports["default"])


def test_a_hung_user_pin_cache_delays_a_request_by_at_most_its_deadline(
    hung_server, cluster
):
    User.objects.create(username="alice")
    cluster.wait_caught_up(timeout=30)
    settings = fast_health(USER_PIN_CACHE="broken", CHECK_TIMEOUT=TIMEOUT)
    with override_settings(CACHES=redis_at(hung_server), RWSPLIT=settings):
        client = CookielessClient()
        headers = {"Authorization": "Token alice"}
        created, elapsed_write = run_with_deadline(
            lambda: client.get("/api/create/", headers=headers)
        )
        read, elapsed_read = run_with_deadline(
            lambda: client.get(f"/api/item/{created.json()['id']}/", headers=headers)
        )
    assert created.status_code == 200
    assert read.status_code == 200
    assert elapsed_write < REQUEST_BOUND
    assert elapsed_read < REQUEST_BOUND


@pytest.fixture
def tasks_module():
    pytest.importorskip("django.tasks")
    from tests import django_tasks_app

    return django_tasks_app


@pytest.mark.parametrize("cache", ["dead", "hung"])
def test_enqueue_after_a_write_survives_a_broken_health_cache(
    cache, tasks_module, request, cluster
):
    port = request.getfixturevalue("dead_port" if cache == "dead" else "hung_server")
    settings = fast_health(HEALTH_CACHE="broken", CHECK_TIMEOUT=TIMEOUT)
    with override_settings(CACHES=redis_at(port), RWSPLIT=settings):

        def enqueue():
            item = Item.objects.create(name=f"enqueued with a {cache} cache")
            return item.pk, tasks_module.find_item.enqueue(item.pk).return_value

        (pk, found), elapsed = run_with_deadline(enqueue)
        where, _ = run_with_deadline(
            lambda: tasks_module.where_reads_go.enqueue().return_value
        )
    # The write stands; the task ran and, its token unreadable, read the primary.
    assert Item.objects.using("default").filter(pk=pk).exists()
    assert found["found"] is True
    assert where == "default"
    assert elapsed < TASK_BOUND
