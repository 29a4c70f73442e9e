"""Command line for the local test cluster: ``python -m django_rwsplit.testing``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    from django_rwsplit.testing import failover, processes
    from django_rwsplit.testing.cluster import (
        DUTY_CYCLE_COMMAND,
        ClusterError,
        LocalCluster,
    )
except ImportError as missing:  # psycopg is the one third-party need here
    sys.exit(
        f"python -m django_rwsplit.testing needs psycopg 3 ({missing}). In a "
        "checkout of django-rwsplit, run it with .venv/bin/python (`make "
        "bootstrap` creates it) or as `make cluster CMD=...`; elsewhere install "
        "psycopg: pip install 'psycopg[binary]'"
    )

DEFAULT_DIR = ".rwsplit-cluster"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("RWSPLIT_CLUSTER_DIR") or DEFAULT_DIR),
        help="cluster directory (default: $RWSPLIT_CLUSTER_DIR or ./%(default)s)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m django_rwsplit.testing",
        description="Run a local PostgreSQL primary + streaming replicas.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start (or reuse) a cluster")
    up.add_argument("--port", type=int, help="primary port (default 15432)")
    up.add_argument("--replicas", type=int, default=2, help="number of replicas")
    for name, text in (
        ("down", "stop all nodes"),
        ("destroy", "stop all nodes and delete the directory"),
        ("status", "show the nodes"),
    ):
        sub.add_parser(name, parents=[common], help=text)
    for name, text in (
        ("pause", "pause WAL replay on a replica"),
        ("resume", "resume WAL replay on a replica"),
        ("stop", "stop a node (replicas: hard stop)"),
        ("start", "start a node"),
        ("freeze", "SIGSTOP a node and its children"),
        ("thaw", "SIGCONT a frozen node"),
        ("unslow", "end a slow-down"),
    ):
        sub.add_parser(name, parents=[common], help=text).add_argument("name")
    delay = sub.add_parser(
        "delay", parents=[common], help="set recovery_min_apply_delay (0 clears)"
    )
    delay.add_argument("name")
    delay.add_argument("ms", type=int)
    slow = sub.add_parser(
        "slow",
        parents=[common],
        help="make a node FACTOR times slower (healthy, caught up) until unslow",
    )
    slow.add_argument("name")
    slow.add_argument("factor", type=float)
    for name, text in (
        ("failover", "stop OLD hard, promote NEW, re-point the other standbys"),
        ("switchover", "NEW catches up, OLD stops cleanly, NEW is promoted"),
        ("rejoin", "rewind OLD (pg_rewind) and start it as a standby of NEW"),
    ):
        moving = sub.add_parser(name, parents=[common], help=text)
        moving.add_argument("old")
        moving.add_argument("new")
    unfenced = sub.add_parser(
        "start-unfenced",
        parents=[common],
        help="start an old primary as it was: writable on its old timeline",
    )
    unfenced.add_argument("name")
    # The background process behind ``slow`` (not for direct use).
    cycle = sub.add_parser(DUTY_CYCLE_COMMAND)
    cycle.add_argument("pid", type=int)
    cycle.add_argument("factor", type=float)
    cycle.add_argument("period", type=float)
    return parser


def _attach(directory: Path) -> LocalCluster:
    directory = directory.absolute()
    if not (directory / "cluster.json").is_file():
        raise ClusterError(
            f"no cluster in {directory}; start one with: {sys.executable} -m "
            f"django_rwsplit.testing up --dir {directory} (or `make demo`)"
        )
    return LocalCluster(directory)


def _status(cluster: LocalCluster) -> None:
    rows = [("NODE", "PORT", "RUNNING", "FROZEN", "SLOW", "RECOVERY", "LSN", "REPLAY")]
    for n in cluster.nodes:
        running = cluster.node_running(n)
        factor = cluster.slowed(n)
        slow = "-" if factor is None else f"{factor:g}x"
        frozen = running and factor is None and cluster.is_frozen(n)
        recovery = lsn = replay = "-"
        if running and not frozen:
            try:
                (rec, lsn_, replay_), *_ = cluster.execute(
                    n,
                    "SELECT pg_is_in_recovery(),"
                    " CASE WHEN pg_is_in_recovery()"
                    " THEN pg_last_wal_replay_lsn()::text"
                    " ELSE pg_current_wal_lsn()::text END,"
                    " CASE WHEN pg_is_in_recovery()"
                    " THEN pg_get_wal_replay_pause_state() ELSE '' END",
                )
                recovery, lsn, replay = ("yes" if rec else "no"), lsn_, replay_ or "-"
            except ClusterError:
                recovery = lsn = replay = "?"
        yes_no = ("yes" if running else "no", "yes" if frozen else "no")
        rows.append((n.name, str(n.port), *yes_no, slow, recovery, lsn, replay))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = _parser().parse_args(argv)
    cmd: str = args.command
    if cmd == DUTY_CYCLE_COMMAND:
        return _duty_cycle(args.pid, args.factor, args.period)
    if cmd == "up":
        cluster = LocalCluster(
            args.dir.absolute(), primary_port=args.port, replicas=args.replicas
        )
        cluster.start()
        for key, value in cluster.env().items():
            print(f"{key}={value}")
        ports = ", ".join(f"{n.name}={n.port}" for n in cluster.nodes)
        print(f"# cluster up in {cluster.base_dir}: {ports}")
        return 0
    cluster = _attach(args.dir)
    if cmd == "down":
        cluster.stop()
    elif cmd == "destroy":
        cluster.destroy()
    elif cmd == "status":
        _status(cluster)
    elif cmd == "pause":
        cluster.pause_replay(args.name)
    elif cmd == "resume":
        cluster.resume_replay(args.name)
    elif cmd == "delay":
        cluster.set_apply_delay(args.name, args.ms)
    elif cmd == "stop":
        node = cluster.node(args.name)
        if node.is_primary:
            cluster.stop_primary()
        else:
            cluster.stop_replica(node)
    elif cmd == "start":
        node = cluster.node(args.name)
        if node.is_primary:
            cluster.start_primary()
        else:
            cluster.start_replica(node)
    elif cmd == "freeze":
        cluster.freeze(args.name)
    elif cmd == "thaw":
        cluster.thaw(args.name)
    elif cmd == "slow":
        cluster.slow(args.name, args.factor)
    elif cmd == "unslow":
        cluster.unslow(args.name)
    elif cmd == "failover":
        failover.failover(cluster, args.old, args.new)
    elif cmd == "switchover":
        failover.switchover(cluster, args.old, args.new)
    elif cmd == "rejoin":
        failover.rejoin(cluster, args.old, args.new)
    elif cmd == "start-unfenced":
        failover.start_unfenced(cluster, args.name)
    return 0


def _duty_cycle(pid: int, factor: float, period: float) -> int:
    """Run the slow-down of ``slow`` until SIGTERM (or the server is gone)."""
    import signal

    ending: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: ending.append(True))
    processes.duty_cycle(pid, factor, period, lambda: bool(ending))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ClusterError becomes a message on stderr and exit code 2."""
    try:
        return run(argv)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
