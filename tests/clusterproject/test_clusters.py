"""
Two real clusters in one project: shop on the default one, analytics on its own.

Run by tests/test_several_clusters.py against both local clusters.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from analytics.models import Event
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.db import connections, router
from django.test import Client, override_settings
from shop.models import Order

from django_rwsplit import conf, consistency, pin_primary, process_state
from django_rwsplit.health import registry as health_registry
from django_rwsplit.testing.cluster import LocalCluster
from tests.ports import free_port

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

DEFAULT_REPLICAS = {"replica1", "replica2"}
ANALYTICS_REPLICAS = {"analytics_replica1", "analytics_replica2"}
TOKEN = "a-health-token-of-32-characters!"
PROJECT = Path(__file__).parent


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.02)


def start_both() -> tuple[health_registry.ProcessHealth, health_registry.ProcessHealth]:
    """Route a read of each cluster; wait until every replica is in rotation."""
    router.db_for_read(Order)
    router.db_for_read(Event)
    config = conf.get_config()
    default = health_registry.process_health(config)
    analytics = health_registry.process_health(config.cluster("analytics"))
    wait_until(lambda: default.rotation.members == DEFAULT_REPLICAS, 15)
    wait_until(lambda: analytics.rotation.members == ANALYTICS_REPLICAS, 15)
    return default, analytics


def tables(cluster: LocalCluster) -> set[str]:
    """The tables of the test database on ``cluster``'s primary."""
    name = connections["default"].settings_dict["NAME"]
    with psycopg.connect(
        host="127.0.0.1", port=cluster.primary.port, user="postgres", dbname=name
    ) as connection:
        rows = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def rows_of(cluster: LocalCluster, table: str) -> list[str]:
    name = connections["default"].settings_dict["NAME"]
    with psycopg.connect(
        host="127.0.0.1", port=cluster.primary.port, user="postgres", dbname=name
    ) as connection:
        return [r[0] for r in connection.execute(f"SELECT name FROM {table}")]


def test_migrations_ran_on_each_primary_only(clusters):
    first, second = clusters
    on_first, on_second = tables(first), tables(second)
    assert {"shop_order", "shop_note", "django_content_type"} <= on_first
    assert not {"analytics_event", "analytics_note"} & on_first
    assert {"analytics_event", "analytics_note"} <= on_second
    assert not {"shop_order", "shop_note", "django_content_type"} & on_second
    assert router.allow_migrate("analytics_replica1", "analytics") is False
    assert router.allow_migrate("replica1", "shop") is False


def test_writes_land_on_their_clusters_primary(clusters):
    first, second = clusters
    Order.objects.create(name="an order")
    Event.objects.create(name="an event")
    assert rows_of(first, "shop_order") == ["an order"]
    assert rows_of(second, "analytics_event") == ["an event"]
    assert router.db_for_write(Order) == "default"
    assert router.db_for_write(Event) == "analytics"
    # A relation across clusters is refused; within one it is allowed.
    order, event = Order.objects.get(), Event.objects.get()
    assert router.allow_relation(order, event) is False
    assert router.allow_relation(event, Event.objects.using("analytics").get())


def test_one_monitor_thread_checks_both_clusters(clusters):
    default, analytics = start_both()
    names = [t.name for t in threading.enumerate()]
    assert names.count("django_rwsplit-health") == 1
    assert names.count("django_rwsplit-watchdog") == 1
    rounds = default.monitor.rounds, analytics.monitor.rounds
    wait_until(lambda: default.monitor.rounds > rounds[0] + 2, 10)
    wait_until(lambda: analytics.monitor.rounds > rounds[1] + 2, 10)
    assert default.monitor.thread is analytics.monitor.thread


def test_each_cluster_shares_its_own_round_through_the_cache(clusters):
    cache_settings = {**conf.raw_setting(), "HEALTH_CACHE": "redis"}  # type: ignore[dict-item]
    caches["redis"].clear()
    with override_settings(RWSPLIT=cache_settings):
        default, analytics = start_both()
        keys = {default.monitor.shared.round_key, analytics.monitor.shared.round_key}
        assert len(keys) == 2
        wait_until(lambda: all(caches["redis"].get(key) for key in keys), 10)
        stored = [caches["redis"].get(key) for key in sorted(keys)]
        aliases = [{r["alias"] for r in s["replicas"]} for s in stored]
        assert sorted(map(sorted, aliases)) == [
            sorted(ANALYTICS_REPLICAS),
            sorted(DEFAULT_REPLICAS),
        ]
        process_state.reset()


def test_reads_go_to_each_clusters_replicas(clusters):
    start_both()
    Order.objects.create(name="o")
    Event.objects.create(name="e")
    with pin_primary():
        pass
    seen_orders = {router.db_for_read(Order) for _ in range(20)}
    seen_events = {router.db_for_read(Event) for _ in range(20)}
    # Outside a scope, the writes above pin each context's reads for a while.
    assert seen_orders == {"default"} and seen_events == {"analytics"}
    from django_rwsplit import pinning

    pinning.forget_unscoped_write()
    seen_orders = {router.db_for_read(Order) for _ in range(20)}
    seen_events = {router.db_for_read(Event) for _ in range(20)}
    assert seen_orders == DEFAULT_REPLICAS
    assert seen_events == ANALYTICS_REPLICAS


def test_a_write_outside_a_scope_pins_only_its_cluster(clusters):
    start_both()
    Event.objects.create(name="e")
    assert router.db_for_read(Event) == "analytics"
    assert router.db_for_read(Order) in DEFAULT_REPLICAS


def test_pin_primary_pins_every_cluster_or_the_one_named(clusters):
    start_both()
    with pin_primary("analytics"):
        assert router.db_for_read(Event) == "analytics"
        assert router.db_for_read(Order) in DEFAULT_REPLICAS
    with pin_primary("default"):
        assert router.db_for_read(Order) == "default"
        assert router.db_for_read(Event) in ANALYTICS_REPLICAS
    with pin_primary():
        assert router.db_for_read(Order) == "default"
        assert router.db_for_read(Event) == "analytics"
    assert router.db_for_read(Event) in ANALYTICS_REPLICAS
    with pytest.raises(ValueError, match="no cluster"):
        pin_primary("nope")


def test_a_lagging_replica_in_one_cluster_does_not_affect_the_other(clusters):
    first, second = clusters
    default, analytics = start_both()
    second.pause_replay("replica1")
    deadline = time.monotonic() + 20
    while "analytics_replica1" in analytics.rotation.members:
        assert time.monotonic() < deadline, "analytics_replica1 never left"
        Event.objects.using("analytics").create(name="lag")
        time.sleep(0.1)
    assert default.rotation.members == DEFAULT_REPLICAS
    assert analytics.rotation.members == {"analytics_replica2"}
    from django_rwsplit import pinning

    pinning.forget_unscoped_write()
    orders = Counter(router.db_for_read(Order) for _ in range(40))
    events = Counter(router.db_for_read(Event) for _ in range(40))
    assert set(orders) == DEFAULT_REPLICAS and min(orders.values()) >= 10
    assert events == {"analytics_replica2": 40}
    second.resume_replay("replica1")
    wait_until(lambda: analytics.rotation.members == ANALYTICS_REPLICAS, 15)


def late(clusters: tuple[LocalCluster, LocalCluster], ms: int) -> None:
    for cluster in clusters:
        for replica in cluster.replicas:
            cluster.set_apply_delay(replica, ms)


def test_read_your_writes_holds_per_cluster_under_lag(clusters):
    start_both()
    late(clusters, 1000)
    client = Client()
    for number in range(60):
        pk = client.post("/events/", {"name": f"e{number}"}).json()["pk"]
        token = consistency.decode(
            client.cookies["rwsplit_pin"].value, conf.get_config()
        )
        assert token is not None and set(token.entries()) == {"analytics"}
        body = client.get(f"/events/{pk}/").json()
        assert body["found"], f"cycle {number}: stale read of the event"
        # The analytics write pins nothing of the default cluster.
        assert body["order_db"] in DEFAULT_REPLICAS, body


def test_without_the_token_the_same_reads_are_stale(clusters):
    """Proof that the test above can fail: no cookie, late replicas."""
    start_both()
    late(clusters, 1000)
    stale = 0
    for number in range(20):
        client = Client()
        pk = client.post("/events/", {"name": f"e{number}"}).json()["pk"]
        fresh = Client()
        stale += not fresh.get(f"/events/{pk}/").json()["found"]
    assert stale > 0


def test_a_token_carries_the_position_of_each_cluster_written(clusters):
    start_both()
    from django_rwsplit import pinning

    with pinning.scoped(pinning.Scope()):
        Order.objects.create(name="o")
        Event.objects.create(name="e")
        token = consistency.current_token()
    decoded = consistency.decode(token, conf.get_config())
    assert decoded is not None
    entries = decoded.entries()
    assert set(entries) == {"default", "analytics"}
    assert all(isinstance(lsn, int) for lsn in entries.values())
    late(clusters, 1000)
    event = Event.objects.create(name="after")
    pinning.forget_unscoped_write()
    with pinning.scoped(pinning.Scope()):
        Event.objects.create(name="x")
        token = consistency.current_token()
    with consistency.read_after(token):
        assert Event.objects.filter(pk=event.pk).exists()
        assert router.db_for_read(Order) in DEFAULT_REPLICAS


@contextmanager
def gunicorn(log: Path) -> Iterator[str]:
    """Serve this project with gunicorn (2 workers x 4 threads); yield its URL."""
    port = free_port(range(18300, 18400))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "clusterproject_settings",
        "RWSPLIT_CLUSTERS_DB": str(connections["default"].settings_dict["NAME"]),
    }
    command = [
        *(sys.executable, "-m", "gunicorn", "wsgi:application"),
        *("--workers", "2", "--threads", "4", "--worker-class", "gthread"),
        *("--bind", f"127.0.0.1:{port}", "--timeout", "60"),
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{url}/events/0/", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


def settle(url: str) -> None:
    """Wait until every worker reads both clusters' replicas, 5 times in a row."""
    replicas = DEFAULT_REPLICAS | ANALYTICS_REPLICAS
    streak: Counter[int] = Counter()
    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(8) as pool:
        while len(streak) < 2 or min(streak.values()) < 5:
            assert time.monotonic() < deadline, f"workers never settled: {streak}"
            bodies = pool.map(
                lambda _: json.load(urllib.request.urlopen(f"{url}/events/0/")),
                range(8),
            )
            for body in bodies:
                on_replicas = {body["order_db"], body["event_db"]} <= replicas
                streak[body["pid"]] = streak[body["pid"]] + 1 if on_replicas else 0


def test_a_fault_in_each_cluster_under_load(clusters, tmp_path):
    """Under gunicorn: default replica1 stopped, analytics replica2 frozen."""
    first, second = clusters
    late(clusters, 200)
    stop = threading.Event()
    failures: list[str] = []
    stale: list[int] = []
    slowest = [0.0]
    seen: Counter[str] = Counter()
    done = Counter[str]()
    rotations: dict[int, list[str]] = {}  # each worker's, at its last read
    bound = 2.0 + 1.0  # connect_timeout + 1 s, as the chaos suite's criterion

    def timed(opener: Any, *args: Any) -> Any:
        started = time.monotonic()
        try:
            return json.load(opener.open(*args, timeout=30))
        finally:
            slowest[0] = max(slowest[0], time.monotonic() - started)

    def client_loop(url: str, writes: bool) -> None:
        """A writer reads its event back with its cookie; a reader keeps none."""
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        while not stop.is_set():
            try:
                if writes:
                    created = timed(opener, f"{url}/events/", b"name=load")
                    body = timed(opener, f"{url}/events/{created['pk']}/")
                    if not body["found"]:
                        stale.append(created["pk"])
                else:
                    # No token: the reads that replicas in rotation serve. (A
                    # writer's reads need its fresh write, which replicas
                    # applying WAL 200 ms late never have in time.)
                    body = timed(urllib.request.build_opener(), f"{url}/events/0/")
                seen[body["order_db"]] += 1
                seen[body["event_db"]] += 1
                rotations[body["pid"]] = body["rotation"]
                # The waits below are paced by the writers' cycles, as before.
                done["cycles"] += writes
            except Exception as error:  # noqa: BLE001 - a failed request, counted
                failures.append(repr(error))

    with gunicorn(tmp_path / "gunicorn.log") as url:
        settle(url)
        workers = [
            threading.Thread(target=client_loop, args=(url, number % 2 == 0))
            for number in range(6)
        ]
        for worker in workers:
            worker.start()
        try:
            wait_until(lambda: done["cycles"] >= 20, 30)
            first.stop_replica("replica1")
            second.freeze("replica2")
            before = done["cycles"]
            wait_until(lambda: done["cycles"] >= before + 60, 60)
            seen.clear()
            wait_until(lambda: done["cycles"] >= before + 120, 60)
            assert seen["replica1"] == seen["analytics_replica2"] == 0, seen
            second.thaw("replica2")
            first.start_replica("replica1")
            seen.clear()
            # Both healed replicas serve reads again (in some worker).
            healed = time.monotonic()
            while not (seen["replica1"] and seen["analytics_replica2"]):
                assert time.monotonic() - healed < 60, (
                    f"healed replicas unread for 60 s: reads {dict(seen)}, "
                    f"rotation of each worker {rotations}"
                )
                time.sleep(0.02)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
    assert failures == []
    assert stale == []
    assert slowest[0] < bound, f"a request took {slowest[0]:.2f} s"


def test_replica_health_shows_every_cluster_or_the_one_asked(clusters, capsys):
    call_command("replica_health", "--json")
    combined = json.loads(capsys.readouterr().out)
    assert combined["status"] == "ok"
    assert [c["cluster"] for c in combined["clusters"]] == ["default", "analytics"]
    assert {r["alias"] for r in combined["clusters"][1]["replicas"]} == (
        ANALYTICS_REPLICAS
    )
    call_command("replica_health", "--json", "--cluster", "analytics")
    one = json.loads(capsys.readouterr().out)
    assert one["cluster"] == "analytics" and one["primary"]["alias"] == "analytics"
    call_command("replica_health", "--cluster", "analytics")
    table = capsys.readouterr().out
    assert "cluster analytics:" in table and "analytics_replica1" in table
    assert "replica1 " not in table.replace("analytics_replica1", "")
    with pytest.raises(CommandError, match="no cluster 'nope'") as raised:
        call_command("replica_health", "--cluster", "nope")
    assert raised.value.returncode == 2


def test_a_replica_down_in_one_cluster_is_named_with_its_cluster(clusters, capsys):
    first, second = clusters
    second.stop_replica("replica1")
    with pytest.raises(CommandError) as raised:
        call_command("replica_health")
    assert raised.value.returncode == 1
    assert "cluster analytics: 1 replica out of rotation" in str(raised.value)


def test_health_endpoint_and_status_page_show_every_cluster(clusters):
    start_both()
    client = Client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = client.get("/rwsplit/health/", headers=headers).json()
    assert body["status"] == "ok"
    assert [c["cluster"] for c in body["clusters"]] == ["default", "analytics"]
    one = client.get("/rwsplit/health/?cluster=analytics", headers=headers).json()
    assert one["cluster"] == "analytics"
    assert {r["alias"] for r in one["replicas"]} == ANALYTICS_REPLICAS
    missing = client.get("/rwsplit/health/?cluster=nope", headers=headers)
    assert missing.status_code == 404
    data = client.get("/rwsplit/status/data/?cluster=analytics", headers=headers)
    assert data.json()["cluster"] == "analytics"
    assert data.json()["clusters"] == ["default", "analytics"]
    page = client.get("/rwsplit/status/?cluster=analytics", headers=headers)
    assert page.status_code == 200
    assert b"cluster analytics" in page.content


def test_metrics_label_each_replica_with_its_cluster(clusters):
    prometheus = pytest.importorskip("prometheus_client")
    from django_rwsplit import metrics

    start_both()
    registry = prometheus.CollectorRegistry()
    metrics.install(registry)
    try:
        samples = {
            (s.labels.get("alias"), s.labels.get("cluster"))
            for family in registry.collect()
            if family.name == "rwsplit_replica_in_rotation"
            for s in family.samples
        }
    finally:
        metrics.uninstall()
    assert ("analytics_replica1", "analytics") in samples
    assert ("replica1", "default") in samples
