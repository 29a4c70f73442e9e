"""
Which listed node is the primary: the role check of a multi-host primary alias.

A primary alias may list every node of the cluster in libpq's multi-host
syntax (``HOST = "h1,h2,h3"``). libpq's ``target_session_attrs=read-write``
takes the first writable host in that list, which after a failover may be the
old primary come back on its old timeline (a split brain). Here each listed
node is asked its role, timeline and system identifier, all at once and each
within ``CHECK_TIMEOUT``; :func:`choose` names the node writes must go to:
the writable node on the newest timeline of the cluster's system. Other
writable nodes are *fenced*: never written to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django_rwsplit.health.daemon_pool import DaemonPool
from django_rwsplit.health.pgwire import ProbeError, conninfo_from_settings, fetch_row
from django_rwsplit.health.readings import NodeRole

__all__ = [
    "NODE_SQL",
    "NodeReading",
    "PrimaryChoice",
    "choose",
    "find_write_node",
    "forget_found",
    "listed_nodes",
    "lists_several",
    "node_settings",
    "read_nodes",
    "roles",
]

# Role, timeline and system identifier. A primary's timeline is its current
# WAL file's, a standby's the one it receives (pg_control_checkpoint() lags
# until the next checkpoint or restartpoint: the fallback).
NODE_SQL = (
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery()"
    " THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),"
    " (SELECT timeline_id FROM pg_control_checkpoint()))"
    " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
    "::bit(32)::int END,"
    " (SELECT system_identifier FROM pg_control_system())::text"
)


def listed_nodes(settings_dict: Mapping[str, Any]) -> list[str]:
    """
    The ``host:port`` of each node a ``DATABASES`` entry lists (libpq's rules).

    One port applies to every host; an empty one is libpq's default (5432).
    """
    hosts = [h.strip() for h in str(settings_dict.get("HOST") or "").split(",")]
    ports = [p.strip() for p in str(settings_dict.get("PORT") or "").split(",")]
    if len(ports) == 1:
        ports = ports * len(hosts)
    if len(ports) != len(hosts):
        return []
    return [f"{host}:{port or '5432'}" for host, port in zip(hosts, ports, strict=True)]


def lists_several(settings_dict: Mapping[str, Any]) -> bool:
    """Whether a ``DATABASES`` entry lists several nodes (a primary that may move)."""
    return len(listed_nodes(settings_dict)) > 1


def node_settings(settings_dict: Mapping[str, Any], node: str) -> dict[str, Any]:
    """``settings_dict`` narrowed to ``node`` (``host:port``), any role accepted."""
    host, _, port = node.rpartition(":")
    options = dict(settings_dict.get("OPTIONS") or {})
    options.pop("target_session_attrs", None)
    return {**settings_dict, "HOST": host, "PORT": port, "OPTIONS": options}


@dataclass(frozen=True)
class NodeReading:
    """One listed node's answer (``reachable`` False: none in time)."""

    node: str
    reachable: bool
    in_recovery: bool | None = None
    timeline: int | None = None
    system_id: str | None = None
    error: str | None = None

    @property
    def writable(self) -> bool:
        """Whether the node accepts writes (answered, not in recovery)."""
        return self.reachable and self.in_recovery is False


def read_node(
    settings_dict: Mapping[str, Any], node: str, timeout: float
) -> NodeReading:
    """Ask ``node`` its role, timeline and system identifier (never raises)."""
    conninfo = conninfo_from_settings(node_settings(settings_dict, node))
    try:
        in_recovery, timeline, system_id = fetch_row(conninfo, NODE_SQL, timeout)[:3]
    except ProbeError as error:
        return NodeReading(node, False, error=str(error).splitlines()[0][:200])
    except Exception as error:  # noqa: BLE001 - a check never raises
        return NodeReading(node, False, error=f"unexpected error: {error!r}"[:200])
    return NodeReading(
        node,
        True,
        in_recovery=in_recovery == "t",
        timeline=int(timeline) if timeline is not None else None,
        system_id=system_id,
    )


def read_nodes(
    settings_dict: Mapping[str, Any],
    timeout: float,
    pool: DaemonPool | None = None,
) -> list[NodeReading]:
    """Every listed node's reading, asked at once, each within ``timeout``."""
    nodes = listed_nodes(settings_dict)

    def check(node: str) -> NodeReading:
        return read_node(settings_dict, node, timeout)

    if len(nodes) < 2:
        return [check(node) for node in nodes]
    if pool is not None:
        return list(pool.map(check, nodes))
    with DaemonPool(len(nodes)) as own:
        return list(own.map(check, nodes))


@dataclass(frozen=True)
class PrimaryChoice:
    """The node writes go to, and the writable nodes that must not get them."""

    node: str | None
    timeline: int | None
    system_id: str | None
    fenced: tuple[NodeReading, ...] = ()
    foreign: tuple[NodeReading, ...] = ()


def choose(readings: Sequence[NodeReading], system_id: str | None) -> PrimaryChoice:
    """
    The writable node on the newest timeline; the other writable ones fenced.

    ``system_id`` is the cluster's, once known: a node of another system
    (a different cluster behind a reused address) is never chosen. Ties on
    the timeline go to the first listed node.
    """
    writable = [r for r in readings if r.writable]
    if system_id is None and writable:
        newest = max(writable, key=lambda r: r.timeline or 0)
        system_id = newest.system_id
    foreign = tuple(r for r in writable if r.system_id != system_id)
    ours = [r for r in writable if r.system_id == system_id]
    if not ours:
        return PrimaryChoice(None, None, system_id, (), foreign)
    best = ours[0]
    for reading in ours[1:]:
        if (reading.timeline or 0) > (best.timeline or 0):
            best = reading
    fenced = tuple(r for r in ours if r is not best)
    return PrimaryChoice(best.node, best.timeline, system_id, fenced, foreign)


# A node found by a connection's own role check (no round yet), by alias:
# (time.monotonic(), node), reused for one CHECK_INTERVAL.
_found: dict[str, tuple[float, str | None]] = {}
_lock = threading.Lock()


def find_write_node(
    alias: str, settings_dict: Mapping[str, Any], timeout: float, interval: float
) -> str | None:
    """
    Before the first health round: make the role check now (bounded by ``timeout``).

    A process that starts while two nodes accept writes (a deploy during a
    failover) must not write to the older one: its first write waits for
    this check. The answer is kept for ``interval`` seconds.
    """
    now = time.monotonic()
    with _lock:
        found = _found.get(alias)
        if found is not None and now - found[0] < interval:
            return found[1]
        choice = choose(read_nodes(settings_dict, timeout), None)
        _found[alias] = (time.monotonic(), choice.node)
        return choice.node


def forget_found(alias: str | None = None) -> None:
    """Forget the node found for ``alias`` (None: every alias; a reset, a fork)."""
    global _lock
    if alias is not None:
        _found.pop(alias, None)
        return
    _found.clear()
    _lock = threading.Lock()


def roles(found: Sequence[NodeReading], choice: PrimaryChoice) -> tuple[NodeRole, ...]:
    """Each listed node's role in ``choice``, in the order the alias lists them."""
    fenced = {r.node for r in choice.fenced}
    foreign = {r.node for r in choice.foreign}

    def role(reading: NodeReading) -> str:
        if not reading.reachable:
            return "unreachable"
        if reading.node == choice.node:
            return "primary"
        if reading.node in fenced:
            return "fenced"
        if reading.node in foreign:
            return "foreign"
        return "standby" if reading.in_recovery else "writable"

    return tuple(NodeRole(r.node, role(r), r.timeline) for r in found)
