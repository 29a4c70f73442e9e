"""
The rounds ``replica_health`` shows: measured as the app would, or the fleet's.

Also the table and JSON renderings of a round's snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django_rwsplit.conf import Config
from django_rwsplit.health import monitor
from django_rwsplit.health.probes import format_lsn
from django_rwsplit.health.report import replica_reason
from django_rwsplit.health.tracker import HealthSnapshot, Tracker
from django_rwsplit.health.verdict import primary_problem


def _number(value: float | int | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _lsn(value: int | None) -> str:
    return "-" if value is None else format_lsn(value)


def render_table(snapshot: HealthSnapshot, *, verbose: bool = False) -> list[str]:
    """Return the aligned table of the primary and replicas, one line per row."""
    header = ["alias", "host:port", "role", "in rotation", "lag (s)", "lag (bytes)"]
    header.append("check latency (ms)")
    if verbose:
        header += ["in recovery", "replay paused", "streaming", "replay LSN"]
        # The adaptive balancer's inputs seen by the check (shared by the fleet).
        header += ["query (ms)", "active sessions"]
    header.append("error")
    numeric = {4, 5, 6, 11, 12} if verbose else {4, 5, 6}
    rows: list[list[str]] = []
    primary = snapshot.primary
    if primary is not None:
        row = [primary.alias, primary.endpoint, "primary", "-", "-", "-"]
        row.append(_number(primary.latency_ms, 1))
        if verbose:
            current = _lsn(primary.current_lsn)
            row += [_yes_no(primary.in_recovery), "-", "-"]
            row.append(current if current == "-" else f"{current} (current)")
            row += ["-", "-"]
        row.append(primary_problem(primary) or "")
        rows.append(row)
    for status in snapshot.replicas:
        row = [
            status.alias,
            status.endpoint,
            "replica",
            _yes_no(status.in_rotation),
            _number(status.lag_seconds, 2),
            _number(status.lag_bytes, 0),
            _number(status.latency_ms, 1),
        ]
        if verbose:
            row += [
                _yes_no(status.in_recovery),
                _yes_no(status.replay_paused),
                _yes_no(status.streaming),
                _lsn(status.replay_lsn),
                _number(status.query_ms, 2),
                _number(status.active_backends, 0),
            ]
        row.append(replica_reason(status))
        rows.append(row)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    rule = ["-" * width for width in widths]
    lines = []
    for row in [header, rule, *rows]:
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines + node_lines(snapshot) + sync_lines(snapshot)


def sync_lines(snapshot: HealthSnapshot) -> list[str]:
    """The synchronous standbys among the replicas (visible_on_replicas)."""
    synchronous = snapshot.synchronous()
    if not synchronous:
        return []
    covers = "yes" if snapshot.sync_covers_rotation() else "no (positions are polled)"
    return [
        f"synchronous replicas (remote_apply): {', '.join(synchronous)}; "
        f"cover the replicas in rotation: {covers}"
    ]


def node_lines(snapshot: HealthSnapshot) -> list[str]:
    """A multi-host primary alias: each node's role and timeline, the last move."""
    primary = snapshot.primary
    if primary is None or not primary.nodes:
        return []
    listed = ", ".join(
        f"{n.node} {n.role}"
        + (f" (timeline {n.timeline})" if n.timeline is not None else "")
        for n in primary.nodes
    )
    lines = [f"nodes of {primary.alias}: {listed}"]
    if snapshot.primary_changed_at is not None:
        moved = time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(snapshot.primary_changed_at)
        )
        lines.append(f"writes last moved to {primary.node} at {moved}")
    return lines


@dataclass
class Round:
    """One round as the command shows it: the snapshot, where it came from, notes."""

    snapshot: HealthSnapshot
    source: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """The ``--json`` document of this round: the snapshot, source and notes."""
        return {**as_json(self.snapshot), "source": self.source, "notes": self.notes}


def measure_like_the_app(
    tracker: Tracker,
    config: Config,
    databases: Mapping[str, Mapping[str, Any]],
    *,
    settle: bool,
) -> Round:
    """
    Measure one round into ``tracker`` as a running process would judge it.

    A running process judges replicas against the primary's last position it
    measured, also once the primary is unreachable. This command never saw
    it, so then (with no history yet) it takes the furthest position any
    replica has replayed as that position. With ``settle`` (the tracker's
    first round), a replica found behind a reachable primary gets a second
    round, which gives the primary a history to time its lag by. The notes
    say where the figures can differ from a process that has been measuring
    for a while.
    """
    notes: list[str] = []
    primary, readings = monitor.measure(config, databases)
    if not primary.reachable and tracker.history.last_lsn is None:
        replayed = [r.replay_lsn for r in readings if r.reachable and r.replay_lsn]
        if replayed:
            assumed = max(replayed)
            tracker.history.add(primary.checked_at, assumed)
            notes.append(
                "primary unreachable: this command never saw its WAL position, so "
                "replicas are judged against the furthest position a replica has "
                f"replayed ({format_lsn(assumed)}); a running process judges them "
                "against the primary's last position it measured"
            )
    tracker.apply(primary, readings)
    behind = any((r.lag_bytes or 0) > 0 for r in tracker.snapshot().replicas)
    if settle and primary.reachable and behind:
        tracker.apply(*monitor.measure(config, databases))
    snapshot = tracker.snapshot()
    for status in snapshot.replicas:
        lagging = status.lag_seconds is not None and status.lag_seconds > 0
        untimed = (
            status.replay_lsn is not None
            and tracker.history.last_seen_at_or_before(status.replay_lsn) is None
        )
        if lagging and untimed:
            notes.append(
                f"{status.alias}: lag {status.lag_seconds:.2f} s is the time "
                "since its last replayed commit, an upper bound: this command "
                "has no history of the primary's positions from before it "
                "started; a process that has been measuring times the lag "
                "from its history and can show less"
            )
    return Round(snapshot, {"kind": "measured"}, notes)


def as_json(snapshot: HealthSnapshot) -> dict[str, Any]:
    """Return the ``--json`` document of one round."""
    document = snapshot.as_dict()
    document["checked_at"] = snapshot.taken_at
    for entry in [document["primary"], *document["replicas"]]:
        for key in ("latency_ms", "lag_seconds", "query_ms"):
            if isinstance(entry.get(key), float):
                entry[key] = round(entry[key], 3)
    return document


class ClusterWatch:
    """One cluster's rounds as the command takes them (its tracker, shared rounds)."""

    def __init__(self, config: Config, databases: Mapping[str, Mapping[str, Any]]):
        self.config = config
        self.databases = databases
        self.tracker = monitor.tracker_for(config, databases)
        self.shared = monitor.SharedRounds.of_cluster(config, databases)
        self.last_id: str | None = None

    def next_round(self, *, first: bool) -> Round:
        """The fleet's next verdict from HEALTH_CACHE, else a round measured now."""
        config, shared = self.config, self.shared
        verdict = shared.shared_verdict(after=self.last_id) if shared else None
        if verdict is not None:
            self.last_id = verdict.round_id
            return Round(
                verdict.snapshot,
                {
                    "kind": "health_cache",
                    "cache": str(config.health_cache),
                    "measured_by": verdict.measured_by,
                },
            )
        shown = measure_like_the_app(self.tracker, config, self.databases, settle=first)
        if shared is not None:
            shown.notes.insert(
                0,
                f"no fresh round in HEALTH_CACHE {config.health_cache!r} (no "
                "process measuring for the fleet?): measured by this command",
            )
        return shown
