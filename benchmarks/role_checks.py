"""
The role checks' extra load on the nodes (a primary alias listing every node).

    python benchmarks/role_checks.py [--seconds 10] [--processes 4]

One fresh three-node cluster. For each case, ``--processes`` processes run
their health rounds (``CHECK_INTERVAL`` 0.25 s, nothing else) for
``--seconds``; measured on the primary's node: sessions opened per second
(``pg_stat_database.sessions``) and CPU time of its server processes (the
postmaster's children, live and reaped). Cases: no process (the idle
baseline), a primary alias of one node, and one listing the three nodes (a
role check of each node every round).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _setup import table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django_rwsplit.testing.cluster import LocalCluster  # noqa: E402

ROUNDS = """
import json, os, sys, time
sys.path.insert(0, {root!r})
import django
from django.conf import settings

def db(hosts, ports):
    return {{"ENGINE": "django_rwsplit.backends.postgresql", "NAME": "postgres",
             "USER": "postgres", "HOST": hosts, "PORT": ports,
             "OPTIONS": {{"connect_timeout": 2}}}}

nodes = {nodes!r}
primary = (",".join("127.0.0.1" for _ in nodes), ",".join(map(str, nodes))) \\
    if {every!r} else ("127.0.0.1", str(nodes[0]))
settings.configure(
    DATABASES={{"default": db(*primary), "replica1": db("127.0.0.1", str(nodes[1])),
               "replica2": db("127.0.0.1", str(nodes[2]))}},
    INSTALLED_APPS=["django_rwsplit"],
    RWSPLIT={{"REPLICAS": ["replica1", "replica2"], "CHECK_INTERVAL": 0.25,
              "CHECK_TIMEOUT": 0.5}},
)
django.setup()
from django_rwsplit import conf
from django_rwsplit.health import registry
state = registry.process_health(conf.get_config())
time.sleep({seconds!r})
print(json.dumps({{"rounds": state.monitor.rounds}}))
"""


def cpu_seconds(cluster: LocalCluster, name: str) -> float:
    """CPU time of a node's server processes so far: live children and reaped."""
    pid = int((cluster.node(name).data_dir / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid:
            total += int(stat[11]) + int(stat[12])
    return total / tick


def sessions(cluster: LocalCluster, name: str) -> int:
    rows = cluster.execute(name, "SELECT sum(sessions) FROM pg_stat_database")
    return int(rows[0][0] or 0)


def measure(
    cluster: LocalCluster, every: bool | None, processes: int, seconds: float
) -> dict[str, float]:
    ports = [node.port for node in cluster.nodes]
    before_cpu, before_sessions = (
        cpu_seconds(cluster, "primary"),
        sessions(cluster, "primary"),
    )
    started = time.monotonic()
    rounds = 0
    if every is None:
        time.sleep(seconds)
    else:
        script = ROUNDS.format(
            root=str(ROOT), nodes=ports, every=every, seconds=seconds
        )
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        running = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(processes)
        ]
        for process in running:
            output, _ = process.communicate(timeout=seconds + 60)
            rounds += json.loads(output.strip().splitlines()[-1])["rounds"]
    elapsed = time.monotonic() - started
    return {
        "sessions_per_s": (sessions(cluster, "primary") - before_sessions) / elapsed,
        "cpu_ms_per_s": (cpu_seconds(cluster, "primary") - before_cpu) * 1000 / elapsed,
        "rounds_per_s": rounds / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--port", type=int, default=19462)
    args = parser.parse_args()
    cluster = LocalCluster(primary_port=args.port)
    cluster.start()
    try:
        cases = {
            "no process (idle baseline)": None,
            "primary alias of one node": False,
            "primary alias listing the 3 nodes": True,
        }
        rows = []
        for label, every in cases.items():
            found = measure(cluster, every, args.processes, args.seconds)
            rows.append(
                [
                    label,
                    f"{found['rounds_per_s']:.1f}",
                    f"{found['sessions_per_s']:.1f}",
                    f"{found['cpu_ms_per_s']:.1f}",
                ]
            )
        print(
            table(
                rows,
                [
                    f"case ({args.processes} processes)",
                    "rounds/s (all processes)",
                    "sessions opened/s on the primary's node",
                    "CPU ms/s of the primary's node",
                ],
            )
        )
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
