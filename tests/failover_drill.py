"""
A failover drill in a process of its own, printed as JSON (tests/test_failover.py).

    python tests/failover_drill.py --dir CLUSTER_DIR --shape per_request
        [--engine django_rwsplit.backends.postgresql] [--crash]

The primary alias lists the three nodes of the local cluster in libpq's
multi-host syntax with ``target_session_attrs=read-write``, as Patroni users
write it. The drill: writes; the primary stopped (``--crash``: immediate),
replica1 promoted, replica2 re-pointed; writes until one succeeds (timed from
the promotion); the old primary started again unfenced (two writable nodes);
writes, each in a "request" of its own; then the process state reset (as in a
freshly started worker) and one more write. Each write reports the port of
the server that took it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    "per_request": {"CONN_MAX_AGE": 0},
    "persistent": {"CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True},
    "pool": {"CONN_MAX_AGE": 0, "OPTIONS": {"pool": {"min_size": 1, "max_size": 4}}},
}


def configure(
    cluster: Any,
    shape: str,
    engine: str,
    primary_wait: float,
    bouncer_port: int | None = None,
) -> None:
    primary, replica1, replica2 = cluster.nodes
    extra = SHAPES[shape]

    def entry(*nodes: Any, **options: Any) -> dict[str, Any]:
        return {
            "ENGINE": engine,
            "NAME": "postgres",
            "USER": "postgres",
            "HOST": ",".join("127.0.0.1" for _ in nodes),
            "PORT": ",".join(str(n.port) for n in nodes),
            "CONN_MAX_AGE": extra["CONN_MAX_AGE"],
            "CONN_HEALTH_CHECKS": extra.get("CONN_HEALTH_CHECKS", False),
            "OPTIONS": {**options, **extra.get("OPTIONS", {}), "connect_timeout": 2},
        }

    if bouncer_port is None:
        default = entry(primary, replica1, replica2, target_session_attrs="read-write")
    else:  # one address that moves: PgBouncer, re-pointed by the drill
        default = entry(SimpleNamespace(port=bouncer_port))
    settings.configure(
        DATABASES={
            "default": default,
            "replica1": entry(replica1),
            "replica2": entry(replica2),
        },
        INSTALLED_APPS=["django_rwsplit"],
        DATABASE_ROUTERS=["django_rwsplit.routers.ReadWriteRouter"],
        RWSPLIT={
            "REPLICAS": ["replica1", "replica2"],
            "CHECK_INTERVAL": 0.25,
            "CHECK_TIMEOUT": 1.0,
            "READMIT_AFTER": 2,
            "PRIMARY_WAIT": primary_wait,
        },
        USE_TZ=True,
        LOGGING_CONFIG=None,
        SECRET_KEY="rwsplit-failover-drill-not-secret",
    )
    django.setup()


def write(note: str) -> dict[str, Any]:
    """One write in a request of its own: the port of the server that took it."""
    from django.db import close_old_connections, connections

    close_old_connections()
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute(
                "INSERT INTO drill (note) VALUES (%s) RETURNING inet_server_port()",
                [note],
            )
            return {"port": cursor.fetchone()[0]}
    except Exception as error:  # noqa: BLE001 - reported, not raised
        import traceback

        where = [
            f"{f.name}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__)
        ]
        return {
            "error": type(error).__name__,
            "message": str(error)[:200],
            "where": " < ".join(reversed(where[-6:])),
        }
    finally:
        close_old_connections()


def forked_writes(count: int) -> list[dict[str, Any]]:
    """``count`` writes from a forked child (its at-fork hooks have run)."""
    import os

    read, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        try:
            from django.db import connections

            for alias in connections:  # the parent's sockets are not ours
                connections[alias].connection = None
            outcome = [write("forked") for _ in range(count)]
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            outcome = [{"error": type(error).__name__, "message": str(error)[:200]}]
        os.write(write_end, json.dumps(outcome).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(child, 0)
    written: list[dict[str, Any]] = json.loads(b"".join(chunks) or b"[]")
    return written


def install_metrics() -> Any:
    """A registry with the rwsplit metrics (None without prometheus_client)."""
    try:
        import prometheus_client
    except ImportError:
        return None
    from django_rwsplit import metrics

    registry = prometheus_client.CollectorRegistry()
    metrics.install(registry)
    return registry


def scrape(registry: Any) -> dict[str, float] | None:
    """The failover metrics, by name."""
    if registry is None:
        return None
    return {
        name: registry.get_sample_value(name, {"alias": "default"}) or 0.0
        for name in ("rwsplit_primary_writable_nodes", "rwsplit_primary_changes_total")
    }


def read_in_new_scope() -> dict[str, Any]:
    """A plain read (a client with no pending write): the alias and the port."""
    from django.db import close_old_connections, connections, router

    from django_rwsplit import pinning

    close_old_connections()
    try:
        with pinning.scoped(pinning.Scope()):
            alias = router.db_for_read(None)
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT inet_server_port()")
                return {"alias": alias, "port": cursor.fetchone()[0]}
    except Exception as error:  # noqa: BLE001 - reported, not raised
        return {"error": type(error).__name__, "message": str(error)[:200]}
    finally:
        close_old_connections()


def lost_write(cluster: Any) -> dict[str, Any]:
    """
    A write lost in an asynchronous failover, and the token that names it.

    Both standbys stop streaming; a write then reaches the primary alone (its
    client holds a token); the primary crashes and replica1 is promoted
    without it. Each token is then read after, as a later request would.
    """
    from django.db import connections, router
    from django.dispatch import receiver

    from django_rwsplit import conf, consistency, pinning, signals
    from django_rwsplit.health import registry as health_registry
    from django_rwsplit.testing import failover

    lost: list[dict[str, Any]] = []

    @receiver(signals.write_lost)
    def seen(sender: Any, **kwargs: Any) -> None:
        lost.append({k: v for k, v in kwargs.items() if k != "signal"})

    def written(note: str) -> str:
        with pinning.scoped(pinning.Scope()):
            with connections["default"].cursor() as cursor:
                cursor.execute("INSERT INTO drill (note) VALUES (%s)", [note])
            token = consistency.current_token()
        assert token is not None
        return token

    def routed(token: str) -> dict[str, Any]:
        with consistency.read_after(token):
            alias = router.db_for_read(None)
            scope = pinning.current_scope()
            return {
                "alias": alias,
                "pinned": scope.pinned if scope is not None else None,
            }

    state = health_registry.process_health(conf.get_config())
    kept = written("kept")
    cluster.wait_caught_up(timeout=30)
    for name in ("replica1", "replica2"):
        failover.detach(cluster, name)
    gone = written("gone")
    connections.close_all()
    failover.failover(cluster, "primary", "replica1", mode="immediate")
    deadline = time.monotonic() + 30
    while state.lineage.timeline != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = cluster.execute(
        "replica1", "SELECT note FROM drill WHERE note IN ('kept', 'gone')"
    )
    return {
        "timeline": state.lineage.timeline,
        "exact": state.lineage.exact,
        "on_new_primary": sorted(row[0] for row in rows),
        "kept": routed(kept),
        "gone": routed(gone),
        "gone_again": routed(gone),
        "signals": lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="per_request")
    parser.add_argument("--engine", default="django_rwsplit.backends.postgresql")
    parser.add_argument("--crash", action="store_true")
    parser.add_argument("--switchover", action="store_true")
    parser.add_argument("--primary-wait", type=float, default=0.0)
    parser.add_argument("--lost-write", action="store_true")
    # The primary alias is one address, this PgBouncer's, re-pointed at the
    # promoted node right after the promotion (a failover hook's job).
    parser.add_argument("--bouncer-port", type=int)
    parser.add_argument("--bouncer-dir")
    args = parser.parse_args()

    from django_rwsplit.testing import failover
    from django_rwsplit.testing.cluster import LocalCluster

    cluster = LocalCluster(args.dir)
    configure(cluster, args.shape, args.engine, args.primary_wait, args.bouncer_port)

    from django.db import connections
    from django.dispatch import receiver

    from django_rwsplit import conf, process_state, signals
    from django_rwsplit.health import registry as health_registry
    from django_rwsplit.health import report
    from django_rwsplit.management.health_rounds import render_table

    events: list[dict[str, Any]] = []

    @receiver(signals.primary_changed)
    def changed(sender: Any, **kwargs: Any) -> None:
        events.append({**kwargs, "name": "primary_changed"})

    @receiver(signals.primary_fenced)
    def fenced(sender: Any, **kwargs: Any) -> None:
        events.append({**kwargs, "name": "primary_fenced"})

    registry = install_metrics()
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS drill (id serial, note text)")
    if args.lost_write:
        cluster.wait_caught_up(timeout=30)
        found = lost_write(cluster)
        found["metrics"] = None
        if registry is not None:
            found["metrics"] = registry.get_sample_value(
                "rwsplit_lost_writes_total", {"cluster": "default"}
            )
        process_state.reset()
        print(json.dumps(found, default=str))
        return
    cluster.wait_caught_up(timeout=30)
    health_registry.process_health(conf.get_config())  # the health rounds
    result: dict[str, Any] = {"before": [write("before") for _ in range(3)]}

    # A writer keeps writing through the switch, as a busy site does.
    new_port = cluster.node("replica1").port
    log: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            log.append((time.monotonic(), write("switch")))
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.2)
    if args.switchover:
        promoted = failover.switchover(cluster, "primary", "replica1")
    else:
        promoted = failover.failover(
            cluster, "primary", "replica1", mode="immediate" if args.crash else "fast"
        )
    if args.bouncer_dir:
        from tests.chaos import pgbouncer

        pgbouncer.repoint(Path(args.bouncer_dir), new_port)

    def resumed() -> float | None:
        return next(
            (t for t, o in list(log) if t >= promoted and o.get("port") == new_port),
            None,
        )

    while resumed() is None and time.monotonic() - promoted < 30:
        time.sleep(0.01)
    stop.set()
    thread.join()
    first = resumed()
    result["resumed_after"] = None if first is None else first - promoted
    result["switch"] = [o for _, o in log]

    # Settled: the promoted replica has left read rotation (not in recovery).
    running = health_registry.current()
    deadline = time.monotonic() + 10
    while running is not None and time.monotonic() < deadline:
        if "replica1" not in running.rotation.members:
            break
        time.sleep(0.02)
    failover.start_unfenced(cluster, "primary")
    started = time.monotonic()
    result["split_brain"] = []
    # Plain reads in another thread (no write pins them) meanwhile.
    reads: list[dict[str, Any]] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            reads.append(read_in_new_scope())
            time.sleep(0.02)

    reading = threading.Thread(target=reader)
    reading.start()
    while time.monotonic() - started < 3.0:
        result["split_brain"].append(write("split"))
        time.sleep(0.02)
    done.set()
    reading.join()
    result["plain_reads"] = reads
    state = health_registry.current()
    result["fenced"] = [str(f) for f in state.fenced] if state is not None else None
    result["primary_node"] = state.primary_node if state is not None else None
    if state is not None:
        snapshot = state.snapshot()
        result["status"] = snapshot.status
        result["summary"] = report.summary(snapshot)
        listed = snapshot.primary.nodes if snapshot.primary is not None else ()
        result["node_roles"] = {n.node: [n.role, n.timeline] for n in listed}
        result["changed_at"] = snapshot.primary_changed_at
        result["table"] = render_table(snapshot)
    result["metrics"] = scrape(registry)

    # A forked worker during the incident (Celery's prefork pool, gunicorn's
    # workers): its first writes, from a child of this process.
    # (Not with the pool: a pool made before fork() has no threads in the
    # child; servers make theirs in each worker.)
    pooled = "pool" in connections["default"].settings_dict["OPTIONS"]
    result["forked_child"] = [] if pooled else forked_writes(3)
    # A worker started during the incident (a deploy): no health state, no
    # connections, no pool.
    process_state.reset()
    connections.close_all()
    if "pool" in connections["default"].settings_dict["OPTIONS"]:
        connections["default"].close_pool()
    result["fresh_process"] = [write("fresh") for _ in range(3)]
    # The old primary rewound and started as a standby of the new one.
    state = health_registry.process_health(conf.get_config())
    rejoin_started = time.monotonic()
    failover.rejoin(cluster, "primary", "replica1")
    result["rejoin_seconds"] = time.monotonic() - rejoin_started
    rounds = state.monitor.rounds
    deadline = time.monotonic() + 30
    while state.monitor.rounds < rounds + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    result["after_rejoin"] = [write("rejoined") for _ in range(3)]
    result["fenced_after_rejoin"] = [str(f) for f in state.fenced]
    result["events"] = [
        {k: v for k, v in e.items() if k not in ("sender", "signal")} for e in events
    ]
    result["ports"] = {n.name: n.port for n in cluster.nodes}
    process_state.reset()
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
