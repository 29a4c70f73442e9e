"""
Nanoseconds per ``router.db_for_read(Model)``: no router, django-multidb-router,
and ReadWriteRouter, measured in one run against a real local cluster.

    python benchmarks/router_overhead.py [--number N] [--repeat R]

Needs ``pip install -r benchmarks/requirements.txt`` for the comparison.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections.abc import Callable

from _setup import cluster, configure, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    try:
        import multidb  # noqa: F401
    except ImportError:
        sys.exit(
            "django-multidb-router is missing: "
            "pip install -r benchmarks/requirements.txt"
        )

    logging.getLogger("django_rwsplit").setLevel(logging.CRITICAL)
    with cluster() as local:
        configure(local)
        from django.contrib.auth.models import User
        from django.db.utils import ConnectionRouter

        from django_rwsplit import pinning
        from django_rwsplit.health import state as health_state
        from django_rwsplit.routers import ReadWriteRouter

        candidates = {
            "no router": ConnectionRouter([]),
            "multidb ReplicaRouter": ConnectionRouter(["multidb.ReplicaRouter"]),
            "multidb PinningReplicaRouter": ConnectionRouter(
                ["multidb.PinningReplicaRouter"]
            ),
            "ReadWriteRouter": ConnectionRouter([ReadWriteRouter()]),
        }
        # Start health checks and let the replicas enter rotation first.
        rw = candidates["ReadWriteRouter"]
        assert rw.db_for_read(User) in ("replica1", "replica2"), (
            "replicas not in rotation"
        )

        def in_request() -> None:
            token = pinning._scope.set(pinning.Scope())
            try:
                for _ in range(args.number):
                    rw.db_for_read(User)
            finally:
                pinning._scope.reset(token)

        def plain(router: ConnectionRouter) -> Callable[[], None]:
            def run() -> None:
                call = router.db_for_read
                for _ in range(args.number):
                    call(User)

            return run

        runs = {name: plain(router) for name, router in candidates.items()}
        runs["ReadWriteRouter, inside a request"] = in_request
        # Interleave the candidates so that machine noise hits them alike.
        best: dict[str, float] = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeat):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - started)
        results = {name: seconds / args.number * 1e9 for name, seconds in best.items()}
        health_state.reset()

    baseline = results["multidb PinningReplicaRouter"]
    rows = [
        [
            name,
            f"{ns:.0f}",
            f"{ns / baseline:.2f}x",
            f"{ns / results['no router']:.2f}x",
        ]
        for name, ns in results.items()
    ]
    print(
        f"Python {platform.python_version()}, "
        f"{args.repeat} x {args.number} calls, best run"
    )
    print(
        table(
            rows,
            ["router", "ns per db_for_read", "vs PinningReplicaRouter", "vs no router"],
        )
    )


if __name__ == "__main__":
    main()
