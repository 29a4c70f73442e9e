"""
Chaos: the example project under gunicorn and uvicorn, faults injected under load.

A CI-sized run of :mod:`tests.chaos.scenario` (``benchmarks/chaos.py`` runs a
longer one): the suite's cluster, a dedicated database, both servers, a load
generator in its own process, and one phase per fault. It runs once per
deployment shape (:data:`tests.chaos.servers.SHAPES`: per-request
connections, persistent ones with health checks, Django's psycopg pool,
``ATOMIC_REQUESTS``), or for the shapes named in ``RWSPLIT_CHAOS_SHAPES``
(comma-separated). The per-phase table is printed (``pytest -s``) and
written to ``artifacts/chaos-<shape>.md``.

The last tests pin down, in process and deterministically, failover paths
that broke read-your-writes while this suite was written.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connections, router
from django.test import Client, override_settings

from django_rwsplit.consistency import read_after
from django_rwsplit.testing.cluster import ClusterError, LocalCluster
from django_rwsplit.testing.fixtures import heal
from tests.chaos.pgbouncer import PgBouncerMissing, bouncers
from tests.chaos.scenario import (
    PLAN,
    concurrent_pins,
    report,
    run_scenario,
    violations,
    write_artifact,
)
from tests.chaos.servers import (
    SHAPES,
    ChaosSettings,
    Server,
    prepare_database,
    reported_ports,
    running_servers,
    warm_up,
)
from tests.testapp.models import Item
from tests.utils import start_health

pytestmark = pytest.mark.cluster

# Each phase outlasts the readmission window with its slack (3 s at these
# settings: scenario.READMIT_SLACK) and the ejection bound (2 s).
PHASE_SECONDS = 3.0
# The baseline runs every step. The other shapes skip the lag (pause) and
# slow-down steps: those act through the rotation alone, the same whatever
# keeps the connections; a hung or dead replica and a restarted primary are
# what kept connections, pools, transactions and PgBouncer change.
ROTATION_ONLY = frozenset({"pause", "resume", "slow", "unslow"})
SHAPE_PLAN = tuple(step for step in PLAN if step.kind not in ROTATION_ONLY)
# Six clients pausing 100 ms between requests: over 200 requests a phase,
# with a core left for the rest of a 2-core machine (make test runs two
# sessions side by side). benchmarks/chaos.py loads the servers harder.
CLIENTS = 6
THINK_MS = 100.0


@dataclass
class Deployment:
    """The example project served twice, against the suite's cluster."""

    cluster: LocalCluster
    settings: ChaosSettings
    servers: dict[str, Server]
    workdir: Path
    # The port the example reports for each node (PgBouncer's, in front).
    ports: dict[str, int]

    @property
    def urls(self) -> dict[str, str]:
        return {name: server.url for name, server in self.servers.items()}

    def settle(self) -> None:
        """
        Heal the cluster; wait until every worker reads from replicas again.

        Tests in this module run in random order, and the in-process ones
        stop and pause replicas: the servers' workers eject them, and each
        readmits them only after its own passing checks.
        """
        heal(self.cluster)
        warm_up(self.servers, [self.ports[r.name] for r in self.cluster.replicas])

    def logs(self) -> str:
        return "\n".join(
            f"--- {s.name} ({s.log}) ---\n{s.log_tail()}" for s in self.servers.values()
        )


def selected_shapes() -> list[str]:
    """
    The shapes to run: ``RWSPLIT_CHAOS_SHAPES`` (comma-separated), else all;
    ``none`` runs none (the session leaves the chaos suite to the others).
    """
    wanted = [s.strip() for s in os.environ.get("RWSPLIT_CHAOS_SHAPES", "").split(",")]
    if wanted == ["none"]:
        return []
    chosen = [s for s in wanted if s and s != "all"] or list(SHAPES)
    unknown = sorted(set(chosen) - set(SHAPES))
    if unknown:
        raise pytest.UsageError(
            f"RWSPLIT_CHAOS_SHAPES names unknown shapes {unknown}; known: "
            + ", ".join(SHAPES)
        )
    return chosen


@pytest.fixture(scope="module", params=selected_shapes())
def deployment(
    request: pytest.FixtureRequest,
    rwsplit_cluster: LocalCluster,
    tmp_path_factory: Any,
) -> Iterator[Deployment]:
    settings = SHAPES[request.param]
    prepare_database(rwsplit_cluster, settings)
    workdir = tmp_path_factory.mktemp("chaos")
    try:
        with contextlib.ExitStack() as stack:
            replica_ports = None
            if settings.pgbouncer:
                try:
                    bouncing = stack.enter_context(bouncers(rwsplit_cluster))
                except PgBouncerMissing as error:
                    pytest.fail(str(error))
                replica_ports = [b.port for b in bouncing.values()]
            servers = stack.enter_context(
                running_servers(
                    rwsplit_cluster,
                    settings,
                    workdir / "logs",
                    replica_ports=replica_ports,
                )
            )
            ports = reported_ports(rwsplit_cluster, replica_ports)
            deployed = Deployment(rwsplit_cluster, settings, servers, workdir, ports)
            deployed.settle()
            yield deployed
    finally:
        with contextlib.suppress(ClusterError):
            rwsplit_cluster.execute(
                rwsplit_cluster.primary,
                f'DROP DATABASE IF EXISTS "{settings.database}" WITH (FORCE)',
            )


def test_concurrent_requests_never_show_another_clients_pin(
    deployment: Deployment,
) -> None:
    """200 overlapping requests, on threads (WSGI) and tasks (ASGI)."""
    deployment.settle()
    seen, problems = concurrent_pins(
        deployment.urls, deployment.settings, deployment.ports, count=200
    )
    assert sum(seen.values()) == 200
    assert all(n >= 30 for n in seen.values()), seen
    assert not problems, (
        f"{len(problems)} of 200 responses show a pin other than their own:\n"
        + "\n".join(problems[:10])
        + f"\n\n{deployment.logs()}"
    )


def test_faults_under_load(deployment: Deployment) -> None:
    deployment.settle()
    started = time.monotonic()
    run = run_scenario(
        deployment.cluster,
        deployment.urls,
        deployment.workdir / "run",
        settings=deployment.settings,
        plan=PLAN if deployment.settings == SHAPES["baseline"] else SHAPE_PLAN,
        phase_seconds=PHASE_SECONDS,
        clients=CLIENTS,
        think_ms=THINK_MS,
        ports=deployment.ports,
    )
    problems = violations(run)
    text = report(run, problems)
    shape = next(n for n, s in SHAPES.items() if s == deployment.settings)
    path = write_artifact(text, f"chaos-{shape}.md")
    print(f"\n{text}\n(chaos run: {time.monotonic() - started:.1f} s; {path})")
    assert not problems, (
        "chaos run broke the pass criteria:\n"
        + "\n".join(f"- {p}" for p in problems)
        + f"\n\n{text}\n{deployment.logs()}"
    )


# Reads follow the token; the paused replica stays in rotation (lag bound far
# away) and rounds run only when the test takes one.
SLOW_CHECKS = {
    "REPLICAS": ["replica1", "replica2"],
    "ROUTE_TEST_MIRRORS_TO_PRIMARY": False,
    "CONSISTENCY": "lsn",
    "MAX_LAG_SECONDS": 60.0,
    "CHECK_INTERVAL": 60.0,
    "CHECK_TIMEOUT": 1.0,
}


@pytest.mark.django_db(transaction=True, databases="__all__")
@override_settings(RWSPLIT=SLOW_CHECKS)
def test_failover_of_a_token_read_keeps_read_your_writes(
    cluster: LocalCluster,
) -> None:
    """
    A read-your-writes read whose replica just died must not fail over to a
    replica behind the client's token (guarantee 5, under a replica stop).
    """
    state = start_health()
    cluster.pause_replay("replica1")
    client = Client()
    item_id = client.get("/create/", {"name": "before-failover"}).json()["id"]
    cluster.wait_caught_up("replica2")
    state.monitor.run_round()  # after the write: replica2 has it, replica1 not
    replica1 = state.tracker.status("replica1")
    replica2 = state.tracker.status("replica2")
    assert replica1 is not None and replica1.in_rotation
    assert replica2 is not None and replica2.in_rotation
    cluster.stop_replica("replica2")  # dies before the monitor's next round
    connections.close_all()

    body = client.get(f"/item/{item_id}/").json()

    assert body["visible"], (
        "LIBRARY BUG (django_rwsplit.backends.postgresql): a read carrying a "
        "read-your-writes token was routed to replica2 (the health snapshot "
        "showed it had replayed the token); replica2 refused the connection and "
        "the backend failed over to any replica in rotation, replica1 (port "
        f"{body['port']}, replay paused before the write), so the client did not "
        "see its own write. The failover target must have reached the scope's "
        "min_lsn (or be the primary)."
    )


@pytest.mark.django_db(transaction=True, databases="__all__")
@override_settings(RWSPLIT={**SLOW_CHECKS, "READMIT_AFTER": 1})
def test_a_substitute_connection_is_dropped_when_its_replica_returns(
    cluster: LocalCluster, ports: dict[str, int]
) -> None:
    """
    A connection opened to replica1 in place of dead replica2 must not go on
    serving alias replica2 once replica2 is back in rotation: a token read
    routed to replica2 (because replica2 has the position) would read replica1.
    Outside requests (tasks with ``read_after``) connections outlive requests.
    """
    state = start_health()
    cluster.pause_replay("replica1")
    client = Client()
    item_id = client.get("/create/", {"name": "behind-replica1"}).json()["id"]
    token = client.cookies["rwsplit_pin"].value
    cluster.wait_caught_up("replica2")
    cluster.stop_replica("replica2")
    substitute = connections["replica2"]
    substitute.close()
    with substitute.cursor() as cursor:  # refused: replica1 serves alias replica2
        cursor.execute("SELECT inet_server_port()")
        assert cursor.fetchone()[0] == ports["replica1"]
    cluster.start_replica("replica2")
    cluster.wait_caught_up("replica2")
    state.monitor.run_round()  # replica2 back (READMIT_AFTER 1), past the token
    assert state.rotation.members == {"replica1", "replica2"}

    with read_after(token):
        alias = router.db_for_read(Item)
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT inet_server_port(), "
                "EXISTS(SELECT 1 FROM testapp_item WHERE id = %s)",
                [item_id],
            )
            port, visible = cursor.fetchone()
    connections.close_all()

    assert visible, (
        "LIBRARY BUG (django_rwsplit.backends.postgresql): a token read was "
        f"routed to {alias} (in rotation again, past the token), but that alias "
        f"still used the substitute connection opened while it was down, to port "
        f"{port} (replica1, replay paused before the write): the client did not "
        "see its own write. Drop a substitute as soon as its replica is back in "
        "rotation (DatabaseWrapper.ensure_connection), not only after "
        "CHECK_INTERVAL."
    )
