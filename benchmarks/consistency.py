"""
Read-your-writes under replica lag: "lsn" versus "time" versus no pinning.

Clients write a row, then read it back 0, 0.25, 0.5 and 1 s later, carrying
their cookies like a browser, while both replicas apply WAL with a fixed
delay (recovery_min_apply_delay, within the lag bound so they stay in
rotation). For each mode: the share of follow-up reads served by replicas,
and the stale reads (the client's own row not visible).

    python benchmarks/consistency.py [--delay-ms 300] [--clients 8] [--cycles 8]
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections import Counter

from _setup import cluster, configure, note_views, table

DB = "rwsplit_bench_consistency"
FOLLOW_UPS = (0.0, 0.25, 0.5, 1.0)


urlpatterns: list = []


def run_mode(name: str, rwsplit: dict, keep_cookie: bool, args, primary_port: int):
    from django.db import connections
    from django.test import Client, override_settings

    from django_rwsplit import process_state

    counts: Counter = Counter()
    lock = threading.Lock()

    def client_loop() -> None:
        client = Client()
        for _ in range(args.cycles):
            pk = client.get("/write/").json()["id"]
            if not keep_cookie:
                client.cookies.clear()
            written = time.monotonic()
            for offset in FOLLOW_UPS:
                time.sleep(max(0.0, written + offset - time.monotonic()))
                body = client.get(f"/read/{pk}/").json()
                with lock:
                    counts["reads"] += 1
                    counts["replica"] += body["port"] != primary_port
                    counts["stale"] += not body["visible"]
                    if offset == 0:
                        counts["first"] += 1
                        counts["first_replica"] += body["port"] != primary_port
        connections.close_all()

    with override_settings(RWSPLIT=rwsplit):
        process_state.reset()
        Client().get("/read/1/")  # start health checks, wait for the first round
        threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        process_state.reset()
    return [
        name,
        str(counts["reads"]),
        f"{counts['replica'] / counts['reads']:.0%}",
        f"{counts['first_replica'] / counts['first']:.0%}",
        str(counts["stale"]),
        f"{elapsed:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay-ms", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=8)
    args = parser.parse_args()
    logging.getLogger("django_rwsplit").setLevel(logging.CRITICAL)
    with cluster() as local:
        local.create_database(DB)
        local.execute("primary", "CREATE TABLE IF NOT EXISTS notes (id serial)", DB)
        local.wait_caught_up()
        base = {
            "CHECK_INTERVAL": 0.5,
            "CHECK_TIMEOUT": 0.5,
            "MAX_LAG_SECONDS": 5.0,
            "STICKY_SECONDS": 5.0,
        }
        configure(
            local,
            dbname=DB,
            django_settings={
                "ROOT_URLCONF": __name__,
                "MIDDLEWARE": ["django_rwsplit.middleware.PinPrimaryMiddleware"],
                "ALLOWED_HOSTS": ["*"],
            },
            **base,
        )
        urlpatterns.extend(note_views())
        replicas = [r.name for r in local.replicas]
        for replica in replicas:
            local.set_apply_delay(replica, args.delay_ms)
        common = {**base, "REPLICAS": replicas}
        modes = [
            ("no pinning", {**common, "CONSISTENCY": "time"}, False),
            ('"time", 5 s window', {**common, "CONSISTENCY": "time"}, True),
            ('"lsn"', {**common, "CONSISTENCY": "lsn"}, True),
            (
                '"lsn", CAUSAL_WAIT 500 ms',
                {**common, "CONSISTENCY": "lsn", "CAUSAL_WAIT": 500},
                True,
            ),
        ]
        rows = [
            run_mode(name, rwsplit, keep, args, local.primary.port)
            for name, rwsplit, keep in modes
        ]
        for replica in replicas:
            local.set_apply_delay(replica, 0)
    print(
        f"apply delay {args.delay_ms} ms on both replicas, {args.clients} clients x "
        f"{args.cycles} writes, reads at {', '.join(map(str, FOLLOW_UPS))} s after"
    )
    print(
        table(
            rows,
            [
                "mode",
                "follow-up reads",
                "served by replicas",
                "immediate reads on replicas",
                "stale reads",
                "seconds",
            ],
        )
    )


if __name__ == "__main__":
    main()
