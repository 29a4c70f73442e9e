"""
Metrics under gunicorn with two workers: prometheus_client's multiprocess mode.

The example project runs with ``RWSPLIT["METRICS"]`` and
``PROMETHEUS_MULTIPROC_DIR``; its ``/metrics`` reads every worker's files.
Each worker's own registry (``/metrics?per_process=1``, what a scrape sees
without multiprocess mode) is the oracle: the multiprocess counters must add
up to the sum of the workers' own counts, which neither worker shows alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from django_rwsplit.testing.cluster import LocalCluster
from tests.chaos import servers
from tests.ports import free_port

pytestmark = pytest.mark.cluster

pytest.importorskip("prometheus_client")

SETTINGS = replace(servers.ChaosSettings(), database="rwsplit_metrics")
READS = re.compile(r'^rwsplit_reads_total\{alias="([^"]+)"\} ([0-9.e+]+)$', re.M)


@pytest.fixture(scope="module")
def database(rwsplit_cluster: LocalCluster) -> Iterator[None]:
    servers.prepare_database(rwsplit_cluster, SETTINGS)
    yield
    rwsplit_cluster.execute(
        rwsplit_cluster.primary,
        'DROP DATABASE IF EXISTS "rwsplit_metrics" WITH (FORCE)',
    )


def start_gunicorn(
    cluster: LocalCluster, directory: Path, *, preload: bool
) -> servers.Server:
    multiproc = directory / "multiproc"
    multiproc.mkdir()
    env = servers.example_env(cluster, SETTINGS)
    env.update({"RWSPLIT_METRICS": "true", "PROMETHEUS_MULTIPROC_DIR": str(multiproc)})
    port = free_port(servers.PORTS)
    log = directory / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "example_project.wsgi:application"),
                *("--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"),
                *("--worker-class", "gthread", "--log-level", "warning"),
                *(["--preload"] if preload else []),
            ],
            cwd=servers.ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = servers.Server("wsgi", port, process, log, workers=2)
    servers.wait_answering(server)
    return server


def get(url: str) -> tuple[dict[str, str], str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(response.headers), response.read().decode()


def reads_total(exposition: str) -> float:
    return sum(float(count) for _, count in READS.findall(exposition))


def until(what: str, check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("preload", [False, True], ids=["app-per-worker", "preload"])
def test_counters_add_up_across_two_gunicorn_workers(
    rwsplit_cluster: LocalCluster, database: None, tmp_path: Path, preload: bool
) -> None:
    server = start_gunicorn(rwsplit_cluster, tmp_path, preload=preload)
    try:
        # Reads in parallel until both workers have served some from replicas.
        served: set[int] = set()

        def whoami(_: int) -> int:
            status, body = servers.get_json(server.url + "/api/whoami/")
            assert status == 200, server.log_tail()
            return int(body["pid"])

        with ThreadPoolExecutor(8) as pool:
            until(
                "both workers served reads",
                lambda: served.update(pool.map(whoami, range(16))) or len(served) == 2,
            )
        # Each worker's own count (no reads happen from here on).
        own: dict[int, float] = {}

        def ask_workers() -> bool:
            headers, text = get(server.url + "/metrics?per_process=1")
            own[int(headers["X-Worker-Pid"])] = reads_total(text)
            return set(own) >= served

        with ThreadPoolExecutor(4) as pool:
            until(
                "each worker answered /metrics",
                lambda: any(pool.map(lambda _: ask_workers(), range(8))),
            )
        expected = sum(own[pid] for pid in served)
        assert all(0 < own[pid] < expected for pid in served), own

        # The multiprocess scrape adds them up, once each worker has synced.
        def scrape() -> str | None:
            exposition = get(server.url + "/metrics")[1]
            return exposition if reads_total(exposition) == expected else None

        text = until(f"the multiprocess scrape reached {expected} reads", scrape)
        in_rotation = re.findall(
            r'^rwsplit_replica_in_rotation\{alias="(replica\d)"\} ([0-9.]+)$',
            text,
            re.M,
        )
        assert dict(in_rotation) == {"replica1": "1.0", "replica2": "1.0"}, text
        assert re.search(r"^rwsplit_replica_outstanding_queries\{", text, re.M), text
    finally:
        server.stop()
