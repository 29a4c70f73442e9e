"""
The health document: one cluster's snapshot, typed, and its JSON form.

:class:`HealthSnapshot` is what every consumer renders: the health endpoint
and status page (views), ``replica_health`` (``--json`` and its table),
the contrib health check, the metrics and the demo.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django_rwsplit.health.readings import PrimaryStatus
from django_rwsplit.health.verdict import PrimaryVerdict, judge_primary

__all__ = ["HealthSnapshot", "ReplicaStatus"]


@dataclass(frozen=True)
class ReplicaStatus:
    """What is known about one replica: its last reading and its place in rotation."""

    alias: str
    endpoint: str
    in_rotation: bool
    reachable: bool | None = None
    in_recovery: bool | None = None
    replay_paused: bool | None = None
    streaming: bool | None = None
    replay_lsn: int | None = None
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    checked_at: float | None = None
    # Load seen by the check: its query's round trip, other active sessions.
    query_ms: float | None = None
    active_backends: int | None = None
    # The name its WAL receiver gives the primary (synchronous_standby_names).
    standby_name: str | None = None


@dataclass(frozen=True)
class HealthSnapshot:
    """The primary's and every replica's state at one moment."""

    primary: PrimaryStatus | None
    replicas: tuple[ReplicaStatus, ...]
    taken_at: float = field(default_factory=time.time)
    # Seconds since the round shown was measured, and the bound past which
    # the process no longer trusts it (None: not known, e.g. a fresh tracker).
    round_age_seconds: float | None = None
    stale_after_seconds: float | None = None
    # When a multi-host primary alias's writes last moved to another node
    # (time.time(); None: not since this process started).
    primary_changed_at: float | None = None

    @property
    def stale(self) -> bool:
        """Return whether the round is too old to route by (reads left replicas)."""
        return (
            self.round_age_seconds is not None
            and self.stale_after_seconds is not None
            and self.round_age_seconds > self.stale_after_seconds
        )

    @property
    def status(self) -> str:
        """Return "ok", "warning" or "critical", as monitoring plugins do."""
        if self.stale:
            return "critical"
        primary_ok = judge_primary(self.primary) is PrimaryVerdict.WRITABLE
        in_rotation = [r for r in self.replicas if r.in_rotation]
        if not primary_ok or (self.replicas and not in_rotation):
            return "critical"
        if len(in_rotation) < len(self.replicas):
            return "warning"
        return "ok"

    def synchronous(self) -> tuple[str, ...]:
        """The replicas the primary reports as synchronous standbys (sync state)."""
        names = set(self.primary.sync_standbys) if self.primary else set()
        return tuple(r.alias for r in self.replicas if r.standby_name in names)

    def sync_covers_rotation(self) -> bool:
        """Whether every replica in rotation is a synchronous standby (remote_apply)."""
        rotating = {r.alias for r in self.replicas if r.in_rotation}
        return bool(rotating) and rotating <= set(self.synchronous())

    def replica(self, alias: str) -> ReplicaStatus | None:
        """Return the status of replica ``alias``, if it is configured."""
        return next((r for r in self.replicas if r.alias == alias), None)

    def as_dict(self, *, show_endpoints: bool = True) -> dict[str, Any]:
        """Return the JSON shape of ``replica_health --json``."""
        primary = self.primary
        replicas = []
        synchronous = self.synchronous()
        for status in self.replicas:
            entry = {
                key: value
                for key, value in asdict(status).items()
                if key not in ("endpoint", "replay_lsn", "checked_at", "streaming")
                or show_endpoints
            }
            entry["synchronous"] = status.alias in synchronous
            replicas.append(entry)
        return {
            "status": self.status,
            "round_age_seconds": self.round_age_seconds,
            "primary": {
                "alias": primary.alias if primary else None,
                **(
                    {"endpoint": primary.endpoint} if primary and show_endpoints else {}
                ),
                "reachable": bool(primary and primary.reachable),
                "in_recovery": primary.in_recovery if primary else None,
                **(
                    {
                        "node": primary.node,
                        "timeline": primary.timeline,
                        "fenced": [asdict(entry) for entry in primary.fenced],
                        "nodes": [asdict(entry) for entry in primary.nodes],
                    }
                    if primary and show_endpoints
                    else {}
                ),
                "two_writable_nodes": bool(primary and primary.fenced),
                "changed_at": self.primary_changed_at,
                "latency_ms": primary.latency_ms if primary else None,
                "error": primary.error if primary else "not checked yet",
            },
            "replicas": replicas,
            # visible_on_replicas(): PostgreSQL waits (remote_apply) for these.
            "synchronous_replicas": list(synchronous),
            "sync_covers_rotation": self.sync_covers_rotation(),
        }
