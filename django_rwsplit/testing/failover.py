"""
A primary that moves, on the local cluster: promote, re-point, rejoin.

Each function acts on a :class:`~django_rwsplit.testing.cluster.LocalCluster`
by node (``"primary"``, ``"replica1"``...); node names stay what they were
at start-up, whatever role the node has now. A real failover: ``pg_ctl
promote`` of a standby, the other standbys re-pointed at it with ``ALTER
SYSTEM`` + reload (they follow the new timeline), and the old primary either
started again as it was (unfenced: two writable nodes) or rewound with
``pg_rewind`` and started as a standby of the new one.
"""

from __future__ import annotations

import time

from django_rwsplit.testing import processes
from django_rwsplit.testing.cluster import NODE_CONF, SUPERUSER, LocalCluster, Node
from django_rwsplit.testing.processes import ClusterError

__all__ = [
    "detach",
    "failover",
    "promote",
    "rejoin",
    "repoint",
    "start_unfenced",
    "switchover",
    "wait_replayed",
]


def _node(cluster: LocalCluster, name: str) -> Node:
    return cluster.node(name)


def _ensure_slot(cluster: LocalCluster, source: Node, slot: str) -> None:
    """Make physical replication slot ``slot`` on ``source`` unless it exists."""
    cluster.execute(
        source,
        "SELECT pg_create_physical_replication_slot(%s, true)"
        " WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
        params=[slot, slot],
    )


def promote(cluster: LocalCluster, name: str, timeout: float = 60.0) -> None:
    """Promote standby ``name`` and wait until it accepts writes."""
    node = _node(cluster, name)
    cluster._run("pg_ctl", "promote", "-D", str(node.data_dir), "-w", "-t", "60")
    processes.poll(
        lambda: cluster._scalar(node, "SELECT NOT pg_is_in_recovery()") is True,
        timeout,
        f"waiting for {name} to accept writes",
    )


def repoint(cluster: LocalCluster, name: str, to: str, timeout: float = 60.0) -> None:
    """Make standby ``name`` stream from ``to`` (a slot is made there first)."""
    node, source = _node(cluster, name), _node(cluster, to)
    _ensure_slot(cluster, source, node.name)
    conninfo = (
        f"host=127.0.0.1 port={source.port} user={SUPERUSER} "
        f"application_name={node.name} connect_timeout=2"
    )
    cluster.execute(node, f"ALTER SYSTEM SET primary_conninfo = '{conninfo}'")
    cluster.execute(node, "SELECT pg_reload_conf()")
    processes.poll(
        lambda: bool(
            cluster._scalar(
                node,
                "SELECT count(*) FROM pg_stat_wal_receiver"
                " WHERE status = 'streaming' AND sender_port = %s",
                source.port,
            )
        ),
        timeout,
        f"waiting for {name} to stream from {to}",
    )


def detach(cluster: LocalCluster, name: str, timeout: float = 60.0) -> None:
    """Make standby ``name`` stop streaming (writes after this never reach it)."""
    node = _node(cluster, name)
    cluster.execute(node, "ALTER SYSTEM SET primary_conninfo = ''")
    cluster.execute(node, "SELECT pg_reload_conf()")
    processes.poll(
        lambda: (
            not cluster._scalar(
                node,
                "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'",
            )
        ),
        timeout,
        f"waiting for {name} to stop streaming",
    )


def failover(
    cluster: LocalCluster, old: str, new: str, *, mode: str = "immediate"
) -> float:
    """
    Stop ``old`` (``mode``: "immediate" is a crash), promote ``new``, re-point
    every other running standby at it. Returns ``time.monotonic()`` of the
    promotion's end.
    """
    cluster._stop_node(_node(cluster, old), mode)
    promote(cluster, new)
    promoted = time.monotonic()
    for other in cluster.nodes:
        if other.name not in (old, new) and cluster.node_running(other):
            repoint(cluster, other.name, new)
    return promoted


def switchover(cluster: LocalCluster, old: str, new: str) -> float:
    """Planned: ``new`` catches up, ``old`` stops cleanly, then ``new`` leads."""
    wait_replayed(cluster, new, source=old)
    return failover(cluster, old, new, mode="fast")


def wait_replayed(
    cluster: LocalCluster, name: str, source: str, timeout: float = 30.0
) -> None:
    """Wait until standby ``name`` has replayed ``source``'s current position."""
    lsn = cluster._scalar(_node(cluster, source), "SELECT pg_current_wal_lsn()::text")
    processes.poll(
        lambda: bool(
            cluster._scalar(
                _node(cluster, name),
                "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)",
                lsn,
            )
        ),
        timeout,
        f"waiting for {name} to replay {source}'s {lsn}",
    )


def start_unfenced(cluster: LocalCluster, name: str) -> None:
    """Start a stopped old primary as it was: writable, on its old timeline."""
    node = _node(cluster, name)
    if (node.data_dir / "standby.signal").exists():
        raise ClusterError(f"{name} is a standby; it would not come back writable")
    cluster._start_node(node)


def rejoin(cluster: LocalCluster, name: str, to: str) -> None:
    """Stop ``name``, rewind it onto ``to``'s timeline, start it as ``to``'s standby."""
    node, source = _node(cluster, name), _node(cluster, to)
    # A slot on the new primary keeps the WAL the rewound node will need.
    _ensure_slot(cluster, source, node.name)
    # pg_rewind reads the source's timeline from its control file, written by
    # a checkpoint: right after a promotion it may still show the old one
    # ("no rewind required"), and the node then cannot follow.
    cluster.execute(source, "CHECKPOINT", timeout=60)
    cluster._stop_node(node, "fast")
    cluster._run(
        "pg_rewind",
        "--target-pgdata",
        str(node.data_dir),
        "--source-server",
        source.dsn(),
        "--no-sync",
        timeout=300,
    )
    (node.data_dir / "standby.signal").touch()
    cluster._chown(node.data_dir / "standby.signal")
    conninfo = (
        f"host=127.0.0.1 port={source.port} user={SUPERUSER} "
        f"application_name={node.name} connect_timeout=2"
    )
    path = node.data_dir / NODE_CONF
    path.write_text(
        f"port = {node.port}\ncluster_name = 'rwsplit-{node.name}'\n"
        f"primary_conninfo = '{conninfo}'\nprimary_slot_name = '{node.name}'\n"
    )
    cluster._chown(path)
    auto = node.data_dir / "postgresql.auto.conf"
    if auto.exists():  # a re-point made earlier names another source
        kept = [
            line
            for line in auto.read_text().splitlines()
            if not line.startswith(("primary_conninfo", "primary_slot_name"))
        ]
        auto.write_text("\n".join(kept) + "\n")
    cluster._start_node(node)
    processes.poll(
        lambda: bool(
            cluster._scalar(
                node,
                "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'",
            )
        ),
        60.0,
        f"waiting for {name} to stream from {to}",
        f"\n--- tail of {node.log_file} ---\n{processes.tail(node.log_file)}",
    )
