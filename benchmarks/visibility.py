"""
visible_on_replicas(): what a commit costs, and what readers without a token get.

    python benchmarks/visibility.py [--commits 200] [--delay-ms 200] [--writes 40]

Part 1, commit latency (replicas applying as fast as they can): ``--commits``
single-row INSERTs in autocommit and in ``atomic()``, each mode in the same
run: a plain commit; ``visible_on_replicas()`` waiting on the replicas'
replay positions; and with the primary's ``synchronous_standby_names``
naming both replicas, where PostgreSQL waits (``remote_apply``).

Part 2, readers without a token (both replicas apply WAL ``--delay-ms``
late, in rotation): a writer writes a row, then four fresh clients (no
cookie) read it at once; the writer also reads it back with its cookie
(read-your-writes). Per mode: the share of reads replicas served, and the
stale reads (the row not visible).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable

from _setup import cluster, configure, note_views, table

DB = "rwsplit_bench_visibility"
SYNC_NAMES = "'FIRST 2 (replica1, replica2)'"


urlpatterns: list = []


def commit_latencies(commits: int, visible: bool, atomic: bool) -> list[float]:
    from django.db import connection, transaction

    from django_rwsplit import visible_on_replicas

    def insert() -> None:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO notes DEFAULT VALUES")

    def once() -> None:
        if atomic:
            with transaction.atomic():
                insert()
        else:
            insert()

    run: Callable[[], None] = once
    if visible:
        run = visible_on_replicas()(once)
    took = []
    for _ in range(commits):
        started = time.perf_counter()
        run()
        took.append((time.perf_counter() - started) * 1000)
    return took


def readers(writes: int, mode: str, primary_port: int) -> Counter:
    from django.test import Client

    counts: Counter = Counter()
    writer = Client()
    query = "?visible=1" if mode == "visible_on_replicas()" else ""
    for _ in range(writes):
        pk = writer.get(f"/write/{query}").json()["id"]
        bodies = [Client().get(f"/read/{pk}/").json() for _ in range(4)]
        own = writer.get(f"/read/{pk}/").json()
        for who, body in [*(("fresh", b) for b in bodies), ("own", own)]:
            counts[f"{who}_reads"] += 1
            counts[f"{who}_replica"] += body["port"] != primary_port
            counts[f"{who}_stale"] += not body["visible"]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--delay-ms", type=int, default=200)
    parser.add_argument("--writes", type=int, default=40)
    args = parser.parse_args()
    logging.getLogger("django_rwsplit").setLevel(logging.CRITICAL)
    with cluster() as local:
        local.create_database(DB)
        local.execute("primary", "CREATE TABLE IF NOT EXISTS notes (id serial)", DB)
        local.wait_caught_up()
        configure(
            local,
            dbname=DB,
            django_settings={
                "ROOT_URLCONF": __name__,
                "MIDDLEWARE": ["django_rwsplit.middleware.PinPrimaryMiddleware"],
                "ALLOWED_HOSTS": ["*"],
            },
            primary_engine="django_rwsplit.backends.postgresql",
            CHECK_INTERVAL=0.25,
            CHECK_TIMEOUT=0.5,
            MAX_LAG_SECONDS=30.0,
            VISIBLE_WAIT=5.0,
        )
        urlpatterns.extend(note_views())
        from django.contrib.auth.models import User
        from django.db import router

        from django_rwsplit import conf
        from django_rwsplit.health import registry

        router.db_for_read(User)  # the health rounds
        state = registry.process_health(conf.get_config())

        def sync(names: str | None) -> None:
            if names is None:
                local.execute("primary", "ALTER SYSTEM RESET synchronous_standby_names")
            else:
                local.execute(
                    "primary", f"ALTER SYSTEM SET synchronous_standby_names = {names}"
                )
            local.execute("primary", "SELECT pg_reload_conf()")
            time.sleep(1.0)
            wanted = 2 if names else 0
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                primary = state.primary
                if primary is not None and len(primary.sync_standbys) == wanted:
                    return
                time.sleep(0.05)
            raise SystemExit("the health rounds never saw the synchronous standbys")

        rows = []
        plain = {}
        for label, visible, names in [
            ("plain commit", False, None),
            ("visible_on_replicas(), replay positions", True, None),
            ("visible_on_replicas(), remote_apply", True, SYNC_NAMES),
            ("plain commit, synchronous standbys (on)", False, SYNC_NAMES),
        ]:
            sync(names)
            for atomic in (False, True):
                took = commit_latencies(args.commits, visible, atomic)
                median = statistics.median(took)
                p95 = statistics.quantiles(took, n=20)[18]
                key = ("atomic" if atomic else "autocommit", names is not None)
                if not visible:
                    plain.setdefault(key[0], median)
                rows.append(
                    [
                        label,
                        key[0],
                        f"{median:.2f}",
                        f"{p95:.2f}",
                        f"{median / plain[key[0]]:.1f}x",
                    ]
                )
        sync(None)
        print(
            table(
                rows,
                ["commit", "shape", "median ms", "p95 ms", "vs plain (same run)"],
            )
        )
        print()
        for replica in local.replicas:
            local.set_apply_delay(replica.name, args.delay_ms)
        time.sleep(1.0)
        reads = []
        for mode in ("plain commit", "visible_on_replicas()"):
            counts = readers(args.writes, mode, local.primary.port)
            reads.append(
                [
                    mode,
                    f"{counts['fresh_replica'] / counts['fresh_reads']:.0%}",
                    f"{counts['fresh_stale']} of {counts['fresh_reads']}",
                    f"{counts['own_replica'] / counts['own_reads']:.0%}",
                    f"{counts['own_stale']} of {counts['own_reads']}",
                ]
            )
        for replica in local.replicas:
            local.set_apply_delay(replica.name, 0)
        print(
            table(
                reads,
                [
                    f"write (replicas {args.delay_ms} ms late)",
                    "fresh readers: on replicas",
                    "fresh readers: stale",
                    "writer (cookie): on replicas",
                    "writer (cookie): stale",
                ],
            )
        )


if __name__ == "__main__":
    main()
