"""
Nanoseconds per ``router.db_for_read(Model)``: no router, django-multidb-router,
and ReadWriteRouter (adaptive and round-robin balancers), measured in one run
against a real local cluster; and the engine's execute wrapper's added cost
per query (failover, hung-server registry, load measurement), in ns.

    python benchmarks/router_overhead.py [--number N] [--repeat R]

Needs ``pip install -r benchmarks/requirements.txt`` for the comparison.
"""

from __future__ import annotations

import argparse
import functools
import logging
import platform
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

from _setup import cluster, configure, table


def best_of(
    runs: dict[str, Callable[[], float | None]], repeat: int, number: int
) -> dict[str, float]:
    """
    Nanoseconds per call of each run, best of ``repeat``, interleaved.

    A run may return the seconds its calls took (leaving out its set-up).
    """
    best: dict[str, float] = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        # Interleaved, so that machine noise hits the candidates alike.
        for name, run in runs.items():
            started = time.perf_counter()
            elapsed = run()
            if elapsed is None:
                elapsed = time.perf_counter() - started
            best[name] = min(best[name], elapsed)
    return {name: seconds / number * 1e9 for name, seconds in best.items()}


def plain_with(
    balancer: str,
    router: Any,
    number: int,
    *,
    in_request: bool = False,
    model: Any = None,
    clusters: bool = False,
) -> Callable[[], float]:
    """
    ``number`` calls of ``router.db_for_read`` with ``balancer`` configured.

    Each run sets its configuration and waits for both replicas in rotation
    before it starts the clock (a new configuration restarts the monitor).
    """
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import override_settings

    from django_rwsplit import conf, pinning
    from django_rwsplit.health import registry as health_registry

    wanted = {**settings.RWSPLIT, "BALANCER": balancer}
    if clusters:
        # auth on a second cluster; contenttypes stays on the default one.
        wanted["CLUSTERS"] = {
            "accounts": {
                "PRIMARY": "other_default",
                "REPLICAS": [f"other_{a}" for a in settings.RWSPLIT["REPLICAS"]],
                "APPS": ["auth"],
            }
        }
    target = model or User

    def run() -> float:
        with override_settings(RWSPLIT=wanted):
            config = conf.get_config().cluster_for_model(target)
            state = health_registry.process_health(config)
            deadline = time.monotonic() + 10
            while len(state.rotation.members) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            call = router.db_for_read
            with pinning.scoped(pinning.Scope()) if in_request else nullcontext():
                started = time.perf_counter()
                for _ in range(number):
                    call(target)
                return time.perf_counter() - started

    return run


def execute_wrapper_cost(number: int, repeat: int) -> dict[str, float]:
    """Nanoseconds the replica engine's execute wrappers add to each query."""
    from django.db import connections

    from django_rwsplit.health import load

    wrapper = connections["replica1"]
    # What Django hands the wrappers: the cursor wrapper around a client-side
    # psycopg cursor (no name).
    cursor = SimpleNamespace(cursor=SimpleNamespace(name=None))
    context = {"connection": wrapper, "cursor": cursor}
    wrappers = list(wrapper.execute_wrappers)
    # An ORM query's text, built anew for each query as Django's compiler does
    # (so the write classifier's cache lookup hashes it each time).
    text = (
        'SELECT "testapp_item"."id", "testapp_item"."name", '
        '"testapp_item"."version" FROM "testapp_item" WHERE "testapp_item"."id" = %s'
    )

    def execute(sql: str, params: Any, many: bool, context: Any) -> None:
        return None

    def bare() -> None:
        for _ in range(number):
            execute("".join((text, " ")), None, False, context)

    executor: Any = execute
    for outer in reversed(wrappers):
        executor = functools.partial(outer, executor)

    def wrapped() -> None:
        for _ in range(number):
            executor("".join((text, " ")), None, False, context)

    def measuring() -> None:
        for _ in range(number):
            load.end("replica1", wrapper, load.begin("replica1", wrapper))

    ns = best_of(
        {"bare": bare, "wrapped": wrapped, "measuring": measuring}, repeat, number
    )
    return {
        "execute wrapper, added per query": ns["wrapped"] - ns["bare"],
        "of which load measurement": ns["measuring"],
    }


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

        from django_rwsplit import process_state
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

        def plain(router: ConnectionRouter) -> Callable[[], None]:
            def run() -> None:
                call = router.db_for_read
                for _ in range(args.number):
                    call(User)

            return run

        runs: dict[str, Callable[[], float | None]] = {
            name: plain(router)
            for name, router in candidates.items()
            if name != "ReadWriteRouter"
        }
        for balancer in ("adaptive", "round_robin"):
            runs[f"ReadWriteRouter, {balancer}"] = plain_with(balancer, rw, args.number)
            runs[f"ReadWriteRouter, {balancer}, inside a request"] = plain_with(
                balancer, rw, args.number, in_request=True
            )
        from django.contrib.contenttypes.models import ContentType

        runs["several clusters: a model of a named cluster"] = plain_with(
            "adaptive", rw, args.number, clusters=True
        )
        runs["several clusters: a model of the default cluster"] = plain_with(
            "adaptive", rw, args.number, clusters=True, model=ContentType
        )
        runs["several clusters: a named cluster's, inside a request"] = plain_with(
            "adaptive", rw, args.number, clusters=True, in_request=True
        )
        results = best_of(runs, args.repeat, args.number)
        wrapper = execute_wrapper_cost(args.number, args.repeat)
        process_state.reset()

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
    print()
    print(table([[k, f"{v:.0f}"] for k, v in wrapper.items()], ["engine", "ns"]))


if __name__ == "__main__":
    main()
