"""
Chaos under load, longer and larger than the suite's run (tests/test_chaos.py).

    python benchmarks/chaos.py [--phase-seconds 20] [--clients 32] [--think-ms 10]
                               [--shape baseline --shape pool ...]

The example project runs under gunicorn (WSGI) and uvicorn (ASGI) against a
local primary + 2 replicas (started on port 19432, or the cluster named by
RWSPLIT_CLUSTER_DIR), while a load generator in its own process mixes plain
reads with write-then-read sessions. Each phase injects one fault: replica1's
replay paused and resumed, replica2 stopped hard and restarted, replica1
frozen and thawed, the primary stopped and restarted. The whole run is
repeated for each deployment shape (tests.chaos.servers.SHAPES; default:
all): per-request connections (the baseline), CONN_MAX_AGE=60 with
CONN_HEALTH_CHECKS, Django's psycopg pool, ATOMIC_REQUESTS, PgBouncer in
transaction pooling mode before each replica. Prints each
shape's per-phase table and one table of the shapes side by side, with
throughput as ratios to the baseline measured in the same run (also written
to artifacts/chaos-benchmark.md), and exits with status 1 if a pass
criterion was broken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from _setup import cluster

from django_rwsplit.testing.cluster import LocalCluster
from tests.chaos.pgbouncer import bouncers
from tests.chaos.scenario import (
    Run,
    concurrent_pins,
    report,
    run_scenario,
    shapes_table,
    violations,
    write_artifact,
)
from tests.chaos.servers import (
    SHAPES,
    ChaosSettings,
    prepare_database,
    reported_ports,
    running_servers,
    warm_up,
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phase-seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--think-ms", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2, help="per server")
    parser.add_argument("--threads", type=int, default=8, help="per gunicorn worker")
    parser.add_argument("--concurrent", type=int, default=200, help="pin check size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--shape",
        action="append",
        choices=list(SHAPES),
        help="a deployment shape to run (repeatable; default: all, baseline first)",
    )
    args = parser.parse_args()

    shapes = args.shape or list(SHAPES)
    started = time.monotonic()
    runs: dict[str, tuple[Run, list[str]]] = {}
    texts = []
    with cluster() as local:
        for name in shapes:
            run, problems, text = run_shape(local, SHAPES[name], args)
            runs[name] = (run, problems)
            texts.append(f"## {name}: {SHAPES[name].shape}\n\n{text}")
            print(texts[-1], flush=True)
    text = (
        "\n".join(texts)
        + "\n## Shapes side by side\n\n"
        + shapes_table(runs)
        + f"\n\nTotal {time.monotonic() - started:.0f} s.\n"
    )
    path = write_artifact(text, "chaos-benchmark.md")
    print(shapes_table(runs))
    print(f"(written to {path})")
    return 1 if any(problems for _, problems in runs.values()) else 0


def run_shape(
    local: LocalCluster, settings: ChaosSettings, args: argparse.Namespace
) -> tuple[Run, list[str], str]:
    """One full chaos run of the example deployed as ``settings`` says."""
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        prepare_database(local, settings)
        replica_ports = None
        if settings.pgbouncer:
            bouncing = stack.enter_context(bouncers(local))
            replica_ports = [b.port for b in bouncing.values()]
        with running_servers(
            local,
            settings,
            workdir / "logs",
            workers=args.workers,
            threads=args.threads,
            replica_ports=replica_ports,
        ) as servers:
            ports = reported_ports(local, replica_ports)
            warm_up(servers, [ports[r.name] for r in local.replicas])
            urls = {name: server.url for name, server in servers.items()}
            seen, pin_problems = concurrent_pins(
                urls, settings, ports, count=args.concurrent
            )
            run = run_scenario(
                local,
                urls,
                workdir / "run",
                settings=settings,
                phase_seconds=args.phase_seconds,
                clients=args.clients,
                think_ms=args.think_ms,
                max_requests=args.max_requests,
                seed=args.seed,
                ports=ports,
            )
    problems = violations(run) + [f"concurrent pins: {p}" for p in pin_problems]
    text = report(run, problems)
    text += (
        f"\n{sum(seen.values())} concurrent requests (pinned by POST, by a cookie, "
        f"and unpinned, on both servers): {len(pin_problems)} showed another "
        f"client's pin.\n"
    )
    return run, problems, text


if __name__ == "__main__":
    sys.exit(main())
