"""
visible_on_replicas() as other readers see it: the example project under
gunicorn (two workers) and uvicorn, replicas that apply WAL 800 ms late (in
rotation: the lag bound is 30 s), and fresh clients with no cookie reading a
row the moment its write returned, on every server and worker.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from django_rwsplit.testing.cluster import LocalCluster
from django_rwsplit.testing.fixtures import heal
from tests.chaos.servers import (
    SHAPES,
    Server,
    get_json,
    prepare_database,
    reported_ports,
    running_servers,
    warm_up,
)

pytestmark = pytest.mark.cluster

APPLY_DELAY_MS = 800
WRITES = 12
# Fresh readers per write, at once: each server's workers are hit in parallel.
READERS = 8
SETTINGS = replace(
    SHAPES["baseline"],
    database="rwsplit_visible",
    max_lag_seconds=30.0,
    visible_wait=2.0,
    health_token="rwsplit-visible-test-token",
)
# VISIBLE_WAIT + CHECK_INTERVAL + CHECK_TIMEOUT, with slack for a busy CI.
WAIT_BOUND = 2.0 + 0.5 + 0.5 + 5.0


@pytest.fixture(scope="module")
def servers(
    rwsplit_cluster: LocalCluster, tmp_path_factory: Any
) -> Iterator[dict[str, Server]]:
    prepare_database(rwsplit_cluster, SETTINGS)
    logs = tmp_path_factory.mktemp("visible") / "logs"
    with running_servers(rwsplit_cluster, SETTINGS, Path(logs)) as running:
        ports = reported_ports(rwsplit_cluster)
        warm_up(running, [ports[r.name] for r in rwsplit_cluster.replicas])
        for replica in rwsplit_cluster.replicas:
            rwsplit_cluster.set_apply_delay(replica.name, APPLY_DELAY_MS)
        try:
            yield running
        finally:
            for replica in rwsplit_cluster.replicas:
                rwsplit_cluster.set_apply_delay(replica.name, 0)
            rwsplit_cluster.execute(
                "primary",
                f'DROP DATABASE IF EXISTS "{SETTINGS.database}" WITH (FORCE)',
            )


REPLICAS = ("replica1", "replica2")


def health_document(server: Server) -> dict[str, Any]:
    """The health endpoint's document, as a monitor with the token reads it."""
    request = urllib.request.Request(
        f"{server.url}/rwsplit/health/",
        headers={"Authorization": f"Bearer {SETTINGS.health_token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        body["pid"] = int(response.headers.get("X-Worker-Pid") or 0)
    return body


def write(server: Server, visible: bool) -> dict[str, Any]:
    """POST a note with no cookie; the JSON answer."""
    query = "?visible=1" if visible else ""
    request = urllib.request.Request(
        f"{server.url}/api/write/{query}", data=b"text=seen", method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def fresh_reads(servers: dict[str, Server], note: int) -> list[dict[str, Any]]:
    """``READERS`` reads of ``note`` per server at once, each a fresh client."""
    urls = [
        f"{server.url}/api/read/{note}/"
        for server in servers.values()
        for _ in range(READERS)
    ]
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        answers = list(pool.map(get_json, urls))
    return [body | {"status": status} for status, body in answers]


def run(servers: dict[str, Server], visible: bool) -> list[dict[str, Any]]:
    reads = []
    for _ in range(WRITES):
        written = write(servers["wsgi"], visible)
        reads += fresh_reads(servers, written["id"])
    return reads


def test_every_fresh_reader_finds_a_row_written_in_the_block(servers):
    reads = run(servers, visible=True)
    assert all(r["status"] == 200 for r in reads), reads
    on_replicas = [r for r in reads if r["alias"] != "default"]
    assert len(on_replicas) >= len(reads) // 2, "reads did not reach the replicas"
    stale = [r for r in reads if not r["visible"]]
    assert stale == [], f"{len(stale)} of {len(reads)} fresh reads missed the row"
    assert len({r["pid"] for r in reads if r["interface"] == "wsgi"}) == 2


def test_without_the_block_fresh_readers_miss_it(servers):
    """The control: the same writes, not in the block, are stale on replicas."""
    reads = run(servers, visible=False)
    stale = [r for r in reads if not r["visible"] and r["alias"] != "default"]
    assert stale, "replicas 800 ms late showed every row at once"


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_a_dead_or_hung_replica_bounds_the_wait_and_no_reader_sees_the_old_row(
    servers, rwsplit_cluster, fault
):
    cluster = rwsplit_cluster
    if fault == "stopped":
        cluster.stop_replica("replica2")
    else:
        cluster.freeze("replica2")
    try:
        started = time.monotonic()
        written = write(servers["wsgi"], visible=True)
        took = time.monotonic() - started
        reads = fresh_reads(servers, written["id"])
    finally:
        heal(cluster)
        for replica in cluster.replicas:
            cluster.set_apply_delay(replica.name, APPLY_DELAY_MS)
    assert took < WAIT_BOUND
    assert all(r["status"] == 200 for r in reads), reads
    stale = [r for r in reads if not r["visible"]]
    assert stale == [], stale


def test_with_synchronous_standbys_every_fresh_reader_finds_it_too(
    servers, rwsplit_cluster
):
    """synchronous_standby_names set: PostgreSQL waits (remote_apply)."""
    cluster = rwsplit_cluster
    names = "'FIRST 2 (replica1, replica2)'"
    cluster.execute("primary", f"ALTER SYSTEM SET synchronous_standby_names = {names}")
    cluster.execute("primary", "SELECT pg_reload_conf()")
    try:
        deadline = time.monotonic() + 15
        # Each worker's rounds report both replicas as synchronous.
        seen: dict[int, list[str]] = {}
        while len([s for s in seen.values() if s == list(REPLICAS)]) < 2:
            document = health_document(servers["wsgi"])
            seen[document["pid"]] = document["synchronous_replicas"]
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        reads = run(servers, visible=True)
    finally:
        cluster.execute("primary", "ALTER SYSTEM RESET synchronous_standby_names")
        cluster.execute("primary", "SELECT pg_reload_conf()")
    assert all(r["status"] == 200 for r in reads), reads
    stale = [r for r in reads if not r["visible"]]
    assert stale == [], f"{len(stale)} of {len(reads)} fresh reads missed the row"
