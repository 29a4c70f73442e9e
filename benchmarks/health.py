"""
Health-check timing and load, against a real local cluster.

1. Time from lag onset (replay paused while the primary keeps writing) to
   ejection, and from resume to readmission, as medians over trials, in
   seconds and in CHECK_INTERVALs.
2. The checks' load on the primary (transactions per second, from
   pg_stat_database) for 1 and 8 processes, without and with HEALTH_CACHE
   (Redis on 127.0.0.1:6379).
3. Lag in seconds as reported behind a busy primary (bulk inserts, replicas
   a few MB behind at each check, CHECK_INTERVAL=1): from the primary's
   position history alone, against history plus the replica's last replayed
   commit, computed from the same readings.

    python benchmarks/health.py [--trials 5] [--window 10] [--busy 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from _setup import cluster, configure, table

DB = "rwsplit_bench"
INTERVAL = 0.5
MAX_LAG = 1.0
READMIT_AFTER = 3

PROCESS = """
import sys, time
sys.path.insert(0, {bench!r})
from _setup import configure
from django_rwsplit.testing.cluster import LocalCluster
configure(
    LocalCluster({base!r}),
    dbname={db!r},
    CHECK_INTERVAL={interval},
    HEALTH_CACHE={cache!r},
)
from django_rwsplit import conf
from django_rwsplit.health import registry as health_registry
health_registry.process_health(conf.get_config())
time.sleep(float(sys.argv[1]))  # keep checking for the measurement window
"""


def timing(local, trials: int) -> list[list[str]]:
    from django_rwsplit import conf, process_state, signals
    from django_rwsplit.health import registry as health_registry

    state = health_registry.process_health(conf.get_config())
    events: dict[str, threading.Event] = {
        "ejected": threading.Event(),
        "readmitted": threading.Event(),
    }

    def on_ejected(alias: str, **kwargs: object) -> None:
        if alias == "replica1":
            events["ejected"].set()

    def on_readmitted(alias: str, **kwargs: object) -> None:
        if alias == "replica1":
            events["readmitted"].set()

    signals.replica_ejected.connect(on_ejected)
    signals.replica_readmitted.connect(on_readmitted)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            local.execute("primary", "INSERT INTO ticks DEFAULT VALUES", DB)
            stop.wait(0.02)  # a steady 50 writes per second

    local.execute("primary", "CREATE TABLE IF NOT EXISTS ticks (id serial)", DB)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    eject, readmit = [], []
    try:
        for _ in range(trials):
            deadline = time.monotonic() + 30
            while "replica1" not in state.rotation.members:
                if time.monotonic() > deadline:
                    sys.exit("replica1 never entered rotation")
                time.sleep(0.01)
            for event in events.values():
                event.clear()
            local.pause_replay("replica1")
            paused = time.monotonic()
            if not events["ejected"].wait(30):
                sys.exit("replica1 was not ejected")
            eject.append(time.monotonic() - paused)
            local.resume_replay("replica1")
            resumed = time.monotonic()
            if not events["readmitted"].wait(60):
                sys.exit("replica1 was not readmitted")
            readmit.append(time.monotonic() - resumed)
    finally:
        stop.set()
        thread.join()
        process_state.reset()
    median_eject, median_readmit = statistics.median(eject), statistics.median(readmit)
    return [
        [
            "lag onset to ejection",
            f"{median_eject:.2f}",
            # + 0.0 turns a rounded -0.0 into 0.0
            f"{round((median_eject - MAX_LAG) / INTERVAL, 1) + 0.0:.1f} intervals "
            f"past the {MAX_LAG:g} s bound (at most 1 by design)",
            f"{min(eject):.2f} / {max(eject):.2f}",
        ],
        [
            "resume to readmission",
            f"{median_readmit:.2f}",
            f"{median_readmit / INTERVAL:.1f} intervals "
            f"(READMIT_AFTER={READMIT_AFTER})",
            f"{min(readmit):.2f} / {max(readmit):.2f}",
        ],
    ]


def primary_xacts(local) -> int:
    rows = local.execute(
        "primary",
        f"SELECT xact_commit + xact_rollback FROM pg_stat_database "
        f"WHERE datname = '{DB}'",
    )
    return int(rows[0][0])


def load(local, window: float) -> list[list[str]]:
    from django.core.cache import caches

    bench = str(Path(__file__).resolve().parent)
    rows = []
    for processes in (1, 8):
        for cache in (None, "redis"):
            if cache:
                caches["redis"].clear()
            env = {**os.environ, "PYTHONPATH": str(Path(bench).parent)}
            script = PROCESS.format(
                bench=bench,
                base=str(local.base_dir),
                db=DB,
                interval=INTERVAL,
                cache=cache,
            )
            before = primary_xacts(local)
            started = time.monotonic()
            procs = [
                subprocess.Popen([sys.executable, "-c", script, str(window)], env=env)
                for _ in range(processes)
            ]
            for proc in procs:
                proc.wait(timeout=window + 60)
            elapsed = time.monotonic() - started
            time.sleep(1.0)  # let the statistics collector flush the last counts
            qps = (primary_xacts(local) - before) / elapsed
            rows.append(
                [
                    str(processes),
                    "Redis" if cache else "none",
                    f"{qps:.2f}",
                    f"{qps * INTERVAL:.2f}",
                ]
            )
    return rows


BUSY_INTERVAL = 1.0
BUSY_BOUND = 0.5


def busy_primary(local, seconds: float) -> list[list[str]]:
    import psycopg
    from django.db import connections

    from django_rwsplit import conf
    from django_rwsplit.health.probes import probe_for
    from django_rwsplit.health.tracker import Tracker

    config = replace(
        conf.get_config(), check_interval=BUSY_INTERVAL, max_lag_seconds=BUSY_BOUND
    )
    both, history_only = Tracker(config), Tracker(config)
    databases = connections.settings
    probe = probe_for(databases["default"])
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(local.primary.dsn(DB), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS busy (i int)")
            while not stop.is_set():
                conn.execute("INSERT INTO busy SELECT generate_series(1, 5000)")
            conn.execute("DROP TABLE busy")

    writer = threading.Thread(target=write)
    writer.start()
    lags: dict[str, list[float]] = {"both": [], "history": []}
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            primary = probe.check_primary("default", databases["default"], 1.0)
            readings = [
                probe.check_replica(alias, databases[alias], 1.0)
                for alias in config.replicas
            ]
            had_history = both.history.last_lsn is not None
            both.apply(primary, readings)
            history_only.apply(
                replace(primary, server_time=None),
                [replace(r, last_replay_at=None) for r in readings],
            )
            for alias in config.replicas if had_history else ():
                a, b = both.status(alias), history_only.status(alias)
                if a and b and a.lag_bytes and a.lag_seconds is not None:
                    lags["both"].append(a.lag_seconds)
                    lags["history"].append(b.lag_seconds or 0.0)
            time.sleep(BUSY_INTERVAL)  # the monitor's pacing, not a wait for state
    finally:
        stop.set()
        writer.join()
    rows = []
    baseline = statistics.median(lags["history"]) if lags["history"] else 0.0
    for name, label in (
        ("history", "primary history only"),
        ("both", "history + last replayed commit"),
    ):
        values = sorted(lags[name])
        if not values:
            continue
        median = statistics.median(values)
        over = sum(v > BUSY_BOUND for v in values) / len(values)
        rows.append(
            [
                label,
                str(len(values)),
                f"{median:.3f}",
                f"{values[int(0.95 * (len(values) - 1))]:.3f}",
                f"{over:.0%}",
                f"{median / baseline:.2f}x" if baseline else "-",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--busy", type=float, default=20.0)
    args = parser.parse_args()
    logging.getLogger("django_rwsplit").setLevel(logging.CRITICAL)
    with cluster() as local:
        local.create_database(DB)
        configure(
            local,
            CHECK_INTERVAL=INTERVAL,
            CHECK_TIMEOUT=0.5,
            MAX_LAG_SECONDS=MAX_LAG,
            READMIT_AFTER=READMIT_AFTER,
            dbname=DB,
        )
        print(
            f"CHECK_INTERVAL={INTERVAL} s, MAX_LAG_SECONDS={MAX_LAG} s, "
            f"READMIT_AFTER={READMIT_AFTER}, {args.trials} trials"
        )
        print(
            table(
                timing(local, args.trials),
                ["transition", "median (s)", "in intervals", "min / max (s)"],
            )
        )
        print()
        print(f"Checks' load on the primary over {args.window:g} s windows")
        print(
            table(
                load(local, args.window),
                ["processes", "HEALTH_CACHE", "primary xact/s", "per interval"],
            )
        )
        print()
        print(
            f"Reported lag behind a busy primary, {args.busy:g} s, "
            f"CHECK_INTERVAL={BUSY_INTERVAL} s, checks where a replica was behind"
        )
        print(
            table(
                busy_primary(local, args.busy),
                [
                    "estimate",
                    "checks",
                    "median (s)",
                    "p95 (s)",
                    f"over {BUSY_BOUND} s",
                    "median vs history",
                ],
            )
        )
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
