"""
What a health check reads: the primary's status and a replica's reading.

Plain frozen records, shared across processes as JSON (health.shared):
they become typed again when read back (a failure's kind, fenced nodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["FencedNode", "NodeRole", "PrimaryStatus", "ProbeFailure", "ReplicaReading"]


class ProbeFailure(StrEnum):
    """Why a check got no answer (its ``error`` says it in words)."""

    #: No answer within ``CHECK_TIMEOUT``: a hung or overloaded server.
    TIMEOUT = "timeout"
    #: The connection was refused, reset or rejected (a stopped server).
    CONNECTION = "connection"
    #: The probe itself failed, or the server answered nonsense.
    UNEXPECTED = "unexpected"


def _typed_failure(status: PrimaryStatus | ReplicaReading) -> None:
    """A failure read back from JSON (a shared round) becomes typed again."""
    failure = status.failure
    if failure is not None and not isinstance(failure, ProbeFailure):
        object.__setattr__(status, "failure", ProbeFailure(failure))


@dataclass(frozen=True)
class FencedNode:
    """A writable node that is not the primary: never written to."""

    node: str  # host:port
    timeline: int | None

    def __str__(self) -> str:
        return f"{self.node} (timeline {self.timeline})"


@dataclass(frozen=True)
class NodeRole:
    """One listed node of a primary alias as the last round found it."""

    node: str  # host:port
    # "primary" (writes go to it), "standby", "fenced" (writable, never
    # written to), "foreign" (another system identifier) or "unreachable".
    role: str
    timeline: int | None = None


def _typed_nodes(status: PrimaryStatus) -> None:
    """Fenced and listed nodes read back from JSON (a shared round) become typed."""
    for name, kind in (("fenced", FencedNode), ("nodes", NodeRole)):
        entries: Any = getattr(status, name)  # a list of mappings, from JSON
        if isinstance(entries, tuple) and all(isinstance(e, kind) for e in entries):
            continue
        typed = tuple(e if isinstance(e, kind) else kind(**e) for e in entries)
        object.__setattr__(status, name, typed)
    if not isinstance(status.sync_standbys, tuple):
        object.__setattr__(status, "sync_standbys", tuple(status.sync_standbys))


@dataclass(frozen=True, kw_only=True)
class PrimaryStatus:
    """Result of checking the primary (measurements are None when unreachable)."""

    alias: str
    endpoint: str
    reachable: bool
    checked_at: float
    in_recovery: bool | None = None
    current_lsn: int | None = None
    server_time: float | None = None
    latency_ms: float | None = None
    error: str | None = None
    failure: ProbeFailure | None = None
    # With a multi-host primary alias (health.nodes): the node writes go to
    # (``host:port``), its timeline and system identifier, and the other
    # writable nodes, fenced.
    node: str | None = None
    timeline: int | None = None
    system_id: str | None = None
    fenced: tuple[FencedNode, ...] = ()
    # Every listed node's role and timeline.
    nodes: tuple[NodeRole, ...] = ()
    # The standbys the primary reports in ``sync`` state (their names).
    sync_standbys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _typed_failure(self)
        _typed_nodes(self)

    def fenced_text(self) -> str:
        """The fenced nodes for people: ``host:port (timeline N)``, comma-separated."""
        return ", ".join(str(entry) for entry in self.fenced)


@dataclass(frozen=True, kw_only=True)
class ReplicaReading:
    """Raw measurement of one replica, no lag policy (None when unreachable)."""

    alias: str
    endpoint: str
    reachable: bool
    checked_at: float
    in_recovery: bool | None = None
    replay_paused: bool | None = None
    streaming: bool | None = None
    replay_lsn: int | None = None
    receive_lsn: int | None = None
    last_replay_at: float | None = None
    server_time: float | None = None
    latency_ms: float | None = None
    error: str | None = None
    # A warm round trip after the check (latency_ms includes connecting).
    query_ms: float | None = None
    active_backends: int | None = None
    failure: ProbeFailure | None = None
    # The name the replica's WAL receiver gives the primary (its
    # application_name, as synchronous_standby_names names standbys).
    standby_name: str | None = None

    def __post_init__(self) -> None:
        _typed_failure(self)
