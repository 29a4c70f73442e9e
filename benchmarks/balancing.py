"""
Load balancing with a slow replica: round-robin against the adaptive balancer.

    python benchmarks/balancing.py [--seconds 15] [--clients 8] [--factor 4]

gunicorn (2 workers x 4 threads) serves the example project against a local
primary + 2 replicas (port 19432, or the cluster named by RWSPLIT_CLUSTER_DIR)
while closed-loop clients read (``GET /api/read/1/``: one read per request).
Three runs on the same cluster, in this order: the healthy cluster (adaptive
balancer); replica1 slowed FACTOR times (``LocalCluster.slow``: it runs
1/FACTOR of each 20 ms) with ``"round_robin"``; the same with ``"adaptive"``.
For each: requests per second, p50/p95/p99 latency, each replica's share of
reads, and ratios to the healthy run. Goals: with ``"adaptive"``, the slowed
replica serves at most 20 % of reads and p99 stays within 1.3x the healthy
run. Also written to artifacts/balancing-benchmark.md; exits 1 if a goal is
missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _setup import cluster, table

from django_rwsplit.testing.cluster import LocalCluster
from tests.chaos.scenario import percentile, write_artifact
from tests.chaos.servers import (
    ChaosSettings,
    example_env,
    prepare_database,
    start_server,
    warm_up,
)

MAX_SLOWED_SHARE = 0.20
MAX_P99_RATIO = 1.3


@dataclass
class Result:
    """One run: what the clients saw."""

    name: str
    balancer: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    errors: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def share(self, port: int) -> float:
        return self.ports.count(port) / len(self.ports) if self.ports else 0.0


def load(port: int, seconds: float, clients: int, result: Result) -> None:
    """Read through ``port`` with ``clients`` closed-loop clients for ``seconds``."""
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies: list[float] = []
        ports: list[int] = []
        errors = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                connection.request("GET", "/api/read/1/")
                response = connection.getresponse()
                body = json.loads(response.read() or b"{}")
            except (OSError, ValueError, http.client.HTTPException):
                errors += 1
                connection.close()
                continue
            latencies.append(time.perf_counter() - started)
            if response.status == 200 and body.get("port"):
                ports.append(int(body["port"]))
            else:
                errors += 1
        connection.close()
        with lock:
            result.latencies += latencies
            result.ports += ports
            result.errors += errors

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run(
    local: LocalCluster,
    settings: ChaosSettings,
    workdir: Path,
    name: str,
    balancer: str,
    args: argparse.Namespace,
    *,
    slowed: bool,
) -> Result:
    """Start gunicorn with ``balancer``, maybe slow replica1, and measure."""
    settings = ChaosSettings(database=settings.database, balancer=balancer)
    server = start_server(
        "wsgi", example_env(local, settings), workdir, workers=2, threads=4
    )
    result = Result(name, balancer, args.seconds)
    try:
        warm_up({"wsgi": server}, [r.port for r in local.replicas])
        if slowed:
            local.slow("replica1", args.factor)
        try:
            load(server.port, 2.0, args.clients, Result(name, balancer, 2.0))
            load(server.port, args.seconds, args.clients, result)
        finally:
            if slowed:
                local.unslow("replica1")
    finally:
        server.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--factor", type=float, default=4.0)
    args = parser.parse_args()
    settings = ChaosSettings(database="rwsplit_bench_balancing")
    with cluster() as local, tempfile.TemporaryDirectory() as tmp:
        prepare_database(local, settings)
        workdir = Path(tmp)
        slow_name = f"replica1 slowed {args.factor:g}x"
        results = [
            run(local, settings, workdir, "healthy", "adaptive", args, slowed=False),
            run(local, settings, workdir, slow_name, "round_robin", args, slowed=True),
            run(local, settings, workdir, slow_name, "adaptive", args, slowed=True),
        ]
        ports = {r.name: r.port for r in local.replicas}
    healthy = results[0]
    header = [
        "run",
        "balancer",
        "requests/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "replica1 share",
        "replica2 share",
        "requests/s vs healthy",
        "p99 vs healthy",
        "errors",
    ]
    rows = [
        [
            r.name,
            f'"{r.balancer}"',
            f"{r.rps:.0f}",
            f"{r.p(0.50):.1f}",
            f"{r.p(0.95):.1f}",
            f"{r.p(0.99):.1f}",
            f"{r.share(ports['replica1']):.0%}",
            f"{r.share(ports['replica2']):.0%}",
            f"{r.rps / healthy.rps:.2f}x",
            f"{r.p(0.99) / healthy.p(0.99):.2f}x",
            str(r.errors),
        ]
        for r in results
    ]
    adaptive = results[2]
    slowed_share = adaptive.share(ports["replica1"])
    p99_ratio = adaptive.p(0.99) / healthy.p(0.99)
    goals = [
        (
            f'"adaptive": slowed replica serves at most {MAX_SLOWED_SHARE:.0%} '
            "of reads",
            slowed_share <= MAX_SLOWED_SHARE,
            f"{slowed_share:.0%}",
        ),
        (
            f'"adaptive": p99 within {MAX_P99_RATIO:g}x of the healthy run',
            p99_ratio <= MAX_P99_RATIO,
            f"{p99_ratio:.2f}x",
        ),
    ]
    text = "\n".join(
        [
            "# Balancing benchmark",
            "",
            f"Python {platform.python_version()}, {args.clients} closed-loop clients, "
            f"{args.seconds:g} s per run, gunicorn 2 workers x 4 threads, "
            "one read per request.",
            "",
            table(rows, header),
            "",
            table(
                [[g, "met" if ok else "MISSED", v] for g, ok, v in goals],
                ["goal", "result", "measured"],
            ),
        ]
    )
    print(text)
    write_artifact(text, "balancing-benchmark.md")
    return 0 if all(ok for _, ok, _ in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
