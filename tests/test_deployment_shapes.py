"""
The guarantees in the shapes Django is deployed in, on the real cluster.

Persistent connections with Django's health checks, Django's psycopg pool,
replicas that cancel reads on recovery conflicts, and ``ATOMIC_REQUESTS``.
The health monitor runs one round at start and then waits a minute, so what
these tests see is the request path's own handling, not the monitor's.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from django.db import close_old_connections, connections, transaction
from django.db.utils import OperationalError
from django.test import Client, override_settings

from django_rwsplit import metrics, signals
from django_rwsplit.backends.postgresql.base import DatabaseWrapper
from django_rwsplit.exceptions import PrimaryUnavailable
from django_rwsplit.testing.cluster import LocalCluster
from tests.chaos.pgbouncer import PgBouncerMissing, bouncers
from tests.testapp.models import Item
from tests.utils import fast_health, server_port, start_health, wait_until

prometheus_client = pytest.importorskip("prometheus_client")

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

REPLICAS = ("replica1", "replica2")
CHECK_TIMEOUT = 0.5
# One round at start, then none during the test.
QUIET = fast_health(CHECK_INTERVAL=60.0, MAX_LAG_SECONDS=60.0)
_T = TypeVar("_T")


def within(seconds: float, func: Callable[[], _T]) -> tuple[_T, float]:
    """Run ``func`` in a thread; return its result and duration, or fail."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    started = time.monotonic()
    future = pool.submit(_closing(func))
    try:
        result = future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        raise AssertionError(f"still waiting after {seconds} s: a hang") from None
    finally:
        pool.shutdown(wait=False)
    return result, time.monotonic() - started


def timed_read(alias: str = "replica1") -> tuple[int, float]:
    """Read through ``alias``; return the server port and how long it took."""
    started = time.monotonic()
    return server_port(alias), time.monotonic() - started


def _closing(func: Callable[[], _T]) -> Callable[[], _T]:
    def run() -> _T:
        try:
            return func()
        finally:
            connections.close_all()

    return run


@contextlib.contextmanager
def replica_settings(
    aliases: tuple[str, ...] = REPLICAS, **changes: Any
) -> Iterator[None]:
    """Change the replicas' DATABASES entries (and drop their connections)."""
    saved = {alias: copy.deepcopy(connections.settings[alias]) for alias in aliases}
    for alias in aliases:
        connections[alias].close()
        settings_dict = connections.settings[alias]
        for key, value in changes.items():
            if key == "OPTIONS":
                settings_dict["OPTIONS"] = {**settings_dict["OPTIONS"], **value}
            else:
                settings_dict[key] = value
    try:
        yield
    finally:
        for alias in aliases:
            connections[alias].close()
            connections[alias].close_pool()
            connections.settings[alias].clear()
            connections.settings[alias].update(saved[alias])


def frozen(cluster: LocalCluster, node: str) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def manager() -> Iterator[None]:
        cluster.freeze(node)
        try:
            yield
        finally:
            cluster.thaw(node)

    return manager()


# -- per-request connections ------------------------------------------------


@override_settings(RWSPLIT=fast_health(CHECK_INTERVAL=0.2, CHECK_TIMEOUT=0.5))
def test_a_connect_to_a_replica_that_hangs_is_released_when_the_monitor_sees_it(
    cluster, ports
):
    """
    A new connection to a frozen server waits up to connect_timeout (2 s in
    libpq at least). Once the monitor finds the replica hung, this process's
    sockets to it are shut down, so the connect fails over at once.
    """
    state = start_health()

    def read() -> tuple[bool, int, float]:
        started = time.monotonic()
        in_rotation = state.in_rotation("replica1")
        return in_rotation, server_port("replica1"), time.monotonic() - started

    with frozen(cluster, "replica1"):
        (in_rotation, port, waited), _ = within(20, read)

    assert in_rotation, "the monitor ejected replica1 before the connect began"
    assert port == ports["replica2"]
    assert waited < 1.8, f"the connect waited {waited:.2f} s (connect_timeout 2 s)"


# -- persistent connections and CONN_HEALTH_CHECKS --------------------------


@override_settings(RWSPLIT=QUIET)
def test_health_check_on_a_kept_connection_to_a_hung_replica_has_a_deadline(
    cluster, ports
):
    """
    Django's reuse check (SELECT 1) on a frozen replica waited for as long as
    the freeze; it now gives up after CHECK_TIMEOUT, ejects the replica, and
    the read moves to the other replica.
    """
    with replica_settings(CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True):
        start_health()

        def next_request() -> int:
            server_port("replica1")  # the connection this thread keeps
            close_old_connections()  # request_finished
            with frozen(cluster, "replica1"):
                close_old_connections()  # request_started
                started = time.monotonic()
                port = server_port("replica1")
                return port, time.monotonic() - started

        (port, waited), _ = within(20, next_request)

    assert port == ports["replica2"]
    assert waited < CHECK_TIMEOUT + 1.0, f"the read waited {waited:.2f} s"


@override_settings(RWSPLIT=QUIET)
def test_a_kept_connection_to_a_replica_that_left_rotation_is_not_reused(cluster):
    with replica_settings(CONN_MAX_AGE=60):
        state = start_health()
        server_port("replica1")
        close_old_connections()
        assert connections["replica1"].connection is not None  # kept
        state.eject("replica1", "connection failed: test")
        close_old_connections()

        assert connections["replica1"].connection is None


# -- Django's psycopg pool ---------------------------------------------------

POOL = {"pool": {"min_size": 2, "max_size": 4, "timeout": 30}}


def pool_of(alias: str) -> Any:
    """The open pool of ``alias`` (None if it has none, or it is not open)."""
    pool = DatabaseWrapper._connection_pools.get(alias)
    return None if pool is None or pool.closed else pool


def clients_on(cluster: LocalCluster, node: str) -> int:
    rows = cluster.execute(
        node,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND datname = 'test_rwsplit'",
    )
    return int(rows[0][0])


@override_settings(RWSPLIT=QUIET)
def test_pool_with_health_checks_does_not_wait_on_a_hung_replica(cluster, ports):
    with replica_settings(OPTIONS=POOL, CONN_HEALTH_CHECKS=True):
        start_health()
        server_port("replica1")
        connections["replica1"].close()  # back to the pool
        wait_until(lambda: pool_of("replica1").get_stats()["pool_available"] >= 2, 10)

        with frozen(cluster, "replica1"):
            (port, waited), _ = within(20, timed_read)

    assert port == ports["replica2"]
    assert waited < CHECK_TIMEOUT + 1.0, f"the read waited {waited:.2f} s"


@override_settings(RWSPLIT=QUIET)
def test_pooled_connections_broken_by_a_restart_never_reach_the_view(cluster, ports):
    """
    A replica restart breaks every idle connection in its pool (Django's
    pool without health checks handed them out: HTTP 500). The pool drops
    them without a round trip, so the read gets a fresh connection to the
    restarted replica, which stays in rotation.
    """
    with replica_settings(OPTIONS=POOL):
        state = start_health()
        for _ in range(3):
            server_port("replica1")
            connections["replica1"].close()
        wait_until(lambda: pool_of("replica1").get_stats()["pool_available"] >= 2, 10)
        cluster.stop_replica("replica1", mode="immediate")
        cluster.start_replica("replica1")

        ports_seen = []
        for _ in range(3):  # every idle connection of the pool was broken
            ports_seen.append(server_port("replica1"))
            connections["replica1"].close()

    assert ports_seen == [ports["replica1"]] * 3
    assert "replica1" in state.rotation.members


@override_settings(RWSPLIT=QUIET)
def test_an_ejected_replicas_pool_keeps_no_connections_open(cluster):
    with replica_settings(OPTIONS=POOL):
        state = start_health()
        server_port("replica1")
        connections["replica1"].close()
        wait_until(lambda: clients_on(cluster, "replica1") >= 2, 10)

        state.eject("replica1", "connection failed: test")
        wait_until(lambda: clients_on(cluster, "replica1") == 0, 10)
        server_port("replica1")  # a substitute, not a new pool for replica1
        connections["replica1"].close()

        assert clients_on(cluster, "replica1") == 0
        assert pool_of("replica1") is None


@override_settings(RWSPLIT=QUIET)
def test_the_primarys_pool_hands_out_no_connection_its_restart_closed(cluster):
    with replica_settings(("default",), OPTIONS=POOL):
        Item.objects.create(name="before the restart")
        connections["default"].close()
        wait_until(lambda: pool_of("default").get_stats()["pool_available"] >= 2, 10)
        cluster.stop_primary()
        cluster.start_primary()

        Item.objects.create(name="after the restart")  # no OperationalError

        assert Item.objects.using("default").count() == 2


@override_settings(RWSPLIT=QUIET)
def test_writes_to_a_stopped_pooled_primary_fail_within_the_connect_timeout(cluster):
    with replica_settings(("default",), OPTIONS=POOL):
        Item.objects.create(name="warm")
        connections["default"].close()
        cluster.stop_primary()
        connections["default"].close()

        def write() -> None:
            with pytest.raises(PrimaryUnavailable):
                Item.objects.create(name="nowhere")

        _, waited = within(20, write)
        connections.close_all()

    assert waited < 2 + 1.0, f"the write waited {waited:.2f} s (pool timeout 30 s)"


# -- PgBouncer in front of a replica -----------------------------------------


@pytest.fixture
def bounced(cluster: LocalCluster) -> Iterator[dict[str, Any]]:
    try:
        with bouncers(cluster) as running:
            yield running
    except PgBouncerMissing as error:
        pytest.fail(str(error))


@override_settings(RWSPLIT=QUIET)
def test_pgbouncer_before_a_hung_replica_does_not_hold_a_new_connection(
    cluster, bounced, ports
):
    """
    PgBouncer accepts a connection at once even when the replica behind it
    hangs; Django's first query on it (setting the time zone) then waited for
    as long as the hang. It now has CHECK_TIMEOUT, then the read moves on.
    """
    with replica_settings(("replica1",), PORT=str(bounced["replica1"].port)):
        start_health()
        server_port("replica1")  # PgBouncer keeps a server connection
        connections["replica1"].close()

        with frozen(cluster, "replica1"):
            (port, waited), _ = within(20, timed_read)

    assert port == ports["replica2"]
    assert waited < CHECK_TIMEOUT + 1.0, f"the read waited {waited:.2f} s"


# -- recovery conflicts --------------------------------------------------------


@pytest.fixture
def conflict_prone(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """Replicas that cancel conflicting queries at once."""

    def set_delay(value: str) -> None:
        for node in REPLICAS:
            cluster.execute(
                node, f"ALTER SYSTEM SET max_standby_streaming_delay = {value}"
            )
            cluster.execute(node, "SELECT pg_reload_conf()")
        for node in REPLICAS:
            wait_until(
                lambda node=node: (
                    cluster.execute(node, "SHOW max_standby_streaming_delay")[0][0]
                    == ("0" if value == "0" else "5s")
                ),
                10,
            )

    set_delay("0")
    try:
        yield cluster
    finally:
        set_delay("DEFAULT")


def lock_table_on_primary(cluster: LocalCluster) -> None:
    """Take ACCESS EXCLUSIVE on testapp_item on the primary, and commit."""
    dsn = cluster.primary.dsn("test_rwsplit")
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("LOCK TABLE testapp_item IN ACCESS EXCLUSIVE MODE")


def sleeping_on(cluster: LocalCluster) -> str | None:
    for node in REPLICAS:
        rows = cluster.execute(
            node,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' "
            "AND state = 'active' AND pid <> pg_backend_pid()",
        )
        if rows[0][0]:
            return node
    return None


@pytest.fixture
def retries() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def receiver(sender: object, **kwargs: Any) -> None:
        seen.append(kwargs)

    signals.read_retried.connect(receiver, weak=False, dispatch_uid="test-retries")
    yield seen
    signals.read_retried.disconnect(dispatch_uid="test-retries")


@override_settings(RWSPLIT=QUIET)
def test_a_read_cancelled_by_a_recovery_conflict_is_retried(
    conflict_prone, ports, retries
):
    cluster = conflict_prone
    start_health()
    client = Client()
    prom = prometheus_client.CollectorRegistry()
    metrics.install(prom)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(_closing(lambda: client.get("/slow-read/?seconds=2")))
            wait_until(lambda: sleeping_on(cluster) is not None, 10)
            conflicted = sleeping_on(cluster)
            lock_table_on_primary(cluster)
            response = future.result(timeout=30)
        counted = prom.get_sample_value(
            "rwsplit_read_retries_total",
            {"alias": conflicted, "reason": "recovery_conflict"},
        )
    finally:
        metrics.uninstall()

    assert response.status_code == 200
    assert [(r["alias"], r["reason"]) for r in retries] == [
        (conflicted, "recovery_conflict")
    ]
    assert response.json()["port"] != ports[conflicted]
    assert counted == 1


@override_settings(RWSPLIT=QUIET)
def test_a_read_inside_a_replica_transaction_is_not_retried(conflict_prone, retries):
    cluster = conflict_prone
    start_health()

    def read_in_transaction() -> None:
        with (
            transaction.atomic(using="replica1"),
            connections["replica1"].cursor() as cursor,
        ):
            cursor.execute("SELECT pg_sleep(2), count(*) FROM testapp_item")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(_closing(read_in_transaction))
        wait_until(lambda: sleeping_on(cluster) == "replica1", 10)
        lock_table_on_primary(cluster)
        with pytest.raises(OperationalError, match="conflict with recovery"):
            future.result(timeout=30)

    assert retries == []


# -- ATOMIC_REQUESTS -----------------------------------------------------------


@override_settings(RWSPLIT=QUIET)
def test_atomic_requests_safe_views_read_replicas_until_they_write(
    atomic_requests, cluster, ports
):
    start_health()
    client = Client()
    replicas = {ports["replica1"], ports["replica2"]}

    reads = client.get("/read/").json()["ports"]
    written = client.get("/write/", {"name": "in-atomic"}).json()

    assert set(reads) <= replicas, "reads of a safe view went to the primary"
    assert written["before"] in replicas
    assert written["after"] == [ports["default"]] * 2, "reads after a write left"


@override_settings(RWSPLIT=QUIET)
def test_atomic_requests_keep_the_views_atomic_blocks_and_rollback(
    atomic_requests, cluster, ports
):
    start_health()
    client = Client()

    body = client.get("/atomic-read/").json()
    with pytest.raises(RuntimeError, match="view failed after writing"):
        client.get("/fail/")

    assert body["outside"] in (ports["replica1"], ports["replica2"])
    assert body["inside"] == ports["default"], "a read in the view's atomic() left"
    assert not Item.objects.using("default").filter(name="then-fail").exists()


@override_settings(RWSPLIT={**QUIET, "REPLICA_READS_IN_ATOMIC_REQUESTS": False})
def test_atomic_requests_reads_stay_on_the_primary_when_turned_off(
    atomic_requests, cluster, ports
):
    start_health()

    reads = Client().get("/read/").json()["ports"]

    assert reads == [ports["default"]] * 3
