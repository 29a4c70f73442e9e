"""
The failover drill under load: the example project served by gunicorn and
uvicorn, browser-like clients writing and reading back, a real failover.

Each deployment shape gets a fresh three-node cluster whose primary alias
lists every node (libpq multi-host, as Patroni users write it). Under load:
the primary stopped and replica1 promoted, replica2 re-pointed; the old
primary started again on its old timeline (two writable nodes); gunicorn's
workers reloaded (a deploy during the incident: fresh processes); the old
primary rewound and rejoined as a standby. Pass criteria (issue 24): no
HTTP 500; no stale read of a client's own write; no write acknowledged by
the old primary once the promotion returned; writes back on the new primary
within a bound; plain reads fail only if in flight at the switch; once
settled, the promoted node serves no plain read.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from django_rwsplit.testing import failover
from django_rwsplit.testing.cluster import LocalCluster
from tests.chaos.pgbouncer import PgBouncerMissing, bouncers
from tests.chaos.scenario import Phase, Run, Step, describe, run_scenario
from tests.chaos.servers import (
    SHAPES,
    prepare_database,
    reported_ports,
    running_servers,
    warm_up,
)
from tests.utils import fresh_cluster

pytestmark = pytest.mark.cluster

DRILL_SHAPES = {
    "per_request": SHAPES["baseline"],
    "persistent": SHAPES["persistent"],
    "pool": SHAPES["pool"],
    "pgbouncer": SHAPES["pgbouncer"],
}
PLAN = (
    Step("steady", "steady"),
    Step("failover to replica1", "failover", "replica1"),
    Step("old primary back, unfenced", "unfenced", "primary"),
    Step("gunicorn workers reloaded", "reload"),
    Step("old primary rejoined", "rejoin", "primary"),
)
PHASE_SECONDS = 2.0
# Six browser-like clients pausing 100 ms between requests: about 50
# requests a second, hundreds per phase, and a core left for the rest of a
# 2-core machine (make test runs two sessions side by side).
CLIENTS = 6
THINK_MS = 100.0
# Writes back on the new primary: CHECK_INTERVAL (0.25 s) + a connect, with
# generous slack for a loaded 2-core machine.
RESUME_BOUND = 10.0


@pytest.fixture
def moving_cluster() -> Iterator[LocalCluster]:
    with fresh_cluster(25) as local:
        yield local


def phase(run: Run, kind: str) -> Phase:
    return next(p for p in run.phases if p.step.kind == kind)


def judge(
    run: Run,
    old: int,
    new: int,
    promoted_reads: int,
    kept: set[tuple[int, str]],
) -> list[str]:
    """
    Every pass criterion the drill broke, as readable sentences.

    ``old`` and ``new`` are the primaries' ports; ``promoted_reads`` is the
    port reads of the promoted node's replica alias report (PgBouncer's when
    it stands in front); ``kept`` is every row (id, text) the new primary
    holds at the end. A write the crash took (acknowledged by the old
    primary before the promotion, never streamed) is on no server: reading
    it back finds nothing, and that is a lost write, not a stale read.
    """
    problems: list[str] = []
    switch = phase(run, "failover")
    settled = phase(run, "unfenced")

    def report(what: str, bad: list[Mapping[str, Any]]) -> None:
        if bad:
            first = describe(bad[0], run.started)
            problems.append(f"{len(bad)} {what}; first: {first}")

    records = run.records
    report("HTTP 500 or no answer", [r for r in records if r["status"] in (0, 500)])
    report(
        "failures other than a 503 during the switch",
        [
            r
            for r in records
            if r["status"] not in (200, 201)
            and not (r["status"] == 503 and r["t0"] <= switch.t1 + RESUME_BOUND)
        ],
    )
    report(
        "stale reads of the client's own write",
        [r for r in records if r["stale"] and (r["note"], r["text"]) in kept],
    )
    report(
        "acknowledged writes lost, other than by the crash",
        [
            r
            for r in records
            if r["kind"] == "write"
            and r["status"] in (200, 201)
            and (r["note"], r["text"]) not in kept
            and not (r["port"] == old and r["t0"] <= switch.t1)
        ],
    )
    report(
        "writes acknowledged by the old primary after the promotion",
        [
            r
            for r in records
            if r["kind"] == "write"
            and r["status"] in (200, 201)
            and r["port"] == old
            and r["t0"] >= switch.t1
        ],
    )
    back = [
        r["t1"]
        for r in records
        if r["kind"] == "write"
        and r["status"] in (200, 201)
        and r["port"] == new
        and r["t0"] >= switch.t1
    ]
    if not back:
        problems.append("no write reached the new primary")
    elif min(back) - switch.t1 > RESUME_BOUND:
        problems.append(f"writes back {min(back) - switch.t1:.2f} s after promotion")
    plain = [r for r in records if r["kind"] == "read" and not r["pinned"]]
    report(
        "plain reads failed outside the switch",
        [
            r
            for r in plain
            if r["status"] not in (200, 201)
            and not (r["t0"] <= switch.t1 and r["t1"] >= switch.t0)
        ],
    )
    report(
        "plain reads served by the promoted node once settled",
        [
            r
            for r in plain
            if r["t0"] >= settled.t0 and r["port"] in (new, promoted_reads)
        ],
    )
    report(
        "plain reads served by the old primary after the promotion",
        [r for r in plain if r["t0"] >= switch.t1 and r["port"] == old],
    )
    return problems


@pytest.mark.parametrize("shape", sorted(DRILL_SHAPES))
def test_failover_under_load_in_each_shape(
    moving_cluster: LocalCluster, shape: str, tmp_path: Path
) -> None:
    cluster = moving_cluster
    settings = replace(
        DRILL_SHAPES[shape],
        database="rwsplit_failover",
        check_interval=0.25,
        every_node_as_primary=True,
    )
    prepare_database(cluster, settings)
    old, new = cluster.node("primary").port, cluster.node("replica1").port
    with contextlib.ExitStack() as stack:
        replica_ports = None
        if settings.pgbouncer:
            try:
                bouncing = stack.enter_context(bouncers(cluster))
            except PgBouncerMissing as error:
                pytest.fail(str(error))
            replica_ports = [b.port for b in bouncing.values()]
        servers = stack.enter_context(
            running_servers(
                cluster, settings, tmp_path / "logs", replica_ports=replica_ports
            )
        )
        ports = reported_ports(cluster, replica_ports)
        warm_up(servers, [ports[r.name] for r in cluster.replicas])

        def reload(step: Step) -> None:
            os.kill(servers["wsgi"].process.pid, signal.SIGHUP)

        run = run_scenario(
            cluster,
            {name: server.url for name, server in servers.items()},
            tmp_path / "run",
            settings=settings,
            plan=PLAN,
            phase_seconds=PHASE_SECONDS,
            clients=CLIENTS,
            think_ms=THINK_MS,
            ports=ports,
            extra={
                "failover": lambda step: failover.failover(
                    cluster, "primary", "replica1"
                ),
                "unfenced": lambda step: failover.start_unfenced(cluster, "primary"),
                "reload": reload,
                "rejoin": lambda step: failover.rejoin(cluster, "primary", "replica1"),
            },
            heal_after=False,
        )
        rows = cluster.execute(
            "replica1", "SELECT id, text FROM shop_note", dbname=settings.database
        )
        kept = {(int(row[0]), str(row[1])) for row in rows}
        problems = judge(run, old, new, ports["replica1"], kept)
        logs = "\n".join(f"--- {s.name} ---\n{s.log_tail()}" for s in servers.values())
    writes = [r for r in run.records if r["kind"] == "write"]
    assert len(writes) >= 20, f"only {len(writes)} writes measured"
    assert not problems, "\n".join(f"- {p}" for p in problems) + "\n" + logs


def _record(kind: str, t0: float, port: int, **extra: Any) -> dict[str, Any]:
    record = {
        "kind": kind,
        "t0": t0,
        "t1": t0 + 0.01,
        "port": port,
        "status": 201 if kind == "write" else 200,
        "stale": None,
        "pinned": True,
        "server": "asgi",
        "reason": "token",
        "error": None,
        "note": None,
        "text": None,
    }
    return {**record, **extra}


def _drill(records: list[dict[str, Any]]) -> Run:
    """A run of PLAN: the failover's promotion from 2.0 s to 2.3 s."""
    times = [(0.0, 0.0), (2.0, 2.3), (4.0, 4.1), (6.0, 6.1), (8.0, 8.5)]
    phases = [Phase(step, t0, t1) for step, (t0, t1) in zip(PLAN, times, strict=True)]
    steady = [_record("write", 0.1, 1, note=1, text="steady")]
    return Run(DRILL_SHAPES["pool"], {}, phases, steady + records, 0.0)


OLD, NEW = 7000, 7001


def test_a_write_the_crash_took_is_lost_not_read_stale() -> None:
    """Pure: the judge, on records of a crash that took one acknowledged write."""
    lost = [
        _record("write", 1.99, OLD, note=7, text="c0-9"),
        _record("read_own", 2.5, NEW, note=7, text="c0-9", stale=True),
    ]
    after = [_record("write", 2.5, NEW, note=8, text="c0-10")]
    kept = {(1, "steady"), (8, "c0-10")}
    assert judge(_drill(lost + after), OLD, NEW, 9, kept) == []
    # The same row on the new primary: the read was stale.
    found = judge(_drill(lost + after), OLD, NEW, 9, kept | {(7, "c0-9")})
    assert [p.split(";")[0] for p in found] == [
        "1 stale reads of the client's own write"
    ]
    # A write acknowledged by the new primary, or by the old one after the
    # promotion, is lost by no crash.
    for write in (
        _record("write", 2.5, NEW, note=7, text="c0-9"),
        _record("write", 2.4, OLD, note=7, text="c0-9"),
    ):
        found = judge(_drill([write, *after]), OLD, NEW, 9, kept)
        assert "acknowledged writes lost, other than by the crash" in "\n".join(found)
