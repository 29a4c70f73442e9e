"""``manage.py replica_health``: measure the primary and the replicas right now."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_rwsplit.conf import Config, get_config
from django_rwsplit.health import monitor
from django_rwsplit.health.probes import format_lsn, probe_for
from django_rwsplit.health.report import (
    primary_problem,
    replica_reason,
    summary,
)
from django_rwsplit.health.tracker import HealthSnapshot, Tracker

EXIT_CODES = {"ok": 0, "warning": 1, "critical": 2}
# Exit status when interrupted before a single round finished (as "UNKNOWN").
INTERRUPTED = 3
CLEAR_SCREEN = "\x1b[H\x1b[2J"
DEFAULT_WATCH = 2.0


class HealthVerdict(CommandError):
    """
    The round's status is not "ok": exit with its status code.

    A verdict, not a crash: run from the shell it prints ``warning: ...`` or
    ``critical: ...`` on stderr, without CommandError's name. In-process
    (``call_command``) it is raised like any CommandError.
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message, returncode=EXIT_CODES[status])
        self.status = status


def positive_seconds(text: str) -> float:
    """Parse a finite number of seconds greater than zero (argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than zero, not {text}")
    return value


def positive_int(text: str) -> int:
    """Parse an integer of at least one (argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


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
    return lines


@dataclass
class Round:
    """One round as the command shows it: the snapshot, where it came from, notes."""

    snapshot: HealthSnapshot
    source: dict[str, str]
    notes: list[str] = field(default_factory=list)


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


def selected_clusters(config: Config, name: str | None) -> list[Config]:
    """The clusters to show: ``name`` alone, or every cluster."""
    if name is None:
        return list(config.every_cluster())
    try:
        return [config.cluster(name)]
    except KeyError:
        known = ", ".join(c.name for c in config.every_cluster())
        raise CommandError(
            f"no cluster {name!r}; clusters: {known}", returncode=2
        ) from None


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
        verdict = shared.fleet_verdict(after=self.last_id) if shared else None
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


class Command(BaseCommand):
    help = (
        "Measure the primary and every replica of RWSPLIT now, with the router's "
        "probes and rules (no running web process needed), and show which "
        "replicas are in rotation. A fresh process has no history of the "
        "primary's WAL position, so when a replica is behind in the first round "
        "one quick extra round is taken before printing, to measure its lag in "
        "seconds. Exit status: 0 every replica in rotation; 1 some replica out "
        "of rotation; 2 primary unreachable or in recovery, no replica in "
        "rotation, or RWSPLIT misconfigured; 3 interrupted before the first "
        "check finished."
    )
    # Report a broken RWSPLIT as exit status 2 rather than failing the checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print JSON instead of a table (default: table). One document "
            "per round: indented for a single check, one per line with --watch.",
        )
        parser.add_argument(
            "--watch",
            nargs="?",
            const=DEFAULT_WATCH,
            type=positive_seconds,
            metavar="SECONDS",
            help="Check again every SECONDS (default: 2 when given without a "
            "value; off when omitted) until interrupted, keeping lag history and "
            "the READMIT_AFTER hysteresis across rounds. Exits with the last "
            "round's status.",
        )
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            metavar="SECONDS",
            help="Give up on each check after SECONDS (default: RWSPLIT "
            "CHECK_TIMEOUT, 1.0 unless set).",
        )
        parser.add_argument(
            "--cluster",
            metavar="NAME",
            help='Show only the cluster NAME ("default" or a name in RWSPLIT '
            '"CLUSTERS"; default: every cluster).',
        )
        parser.add_argument("--rounds", type=positive_int, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        config = get_config()
        if config.problems:
            raise CommandError(
                f"RWSPLIT is misconfigured: {' '.join(config.problems)}", returncode=2
            )
        clusters = selected_clusters(config, options["cluster"])
        if options["timeout"] is not None:
            clusters = [
                dataclasses.replace(c, check_timeout=options["timeout"])
                for c in clusters
            ]
        databases = connections.settings
        try:
            for cluster in clusters:
                probe_for(databases[cluster.primary])
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from None
        watches = [ClusterWatch(cluster, databases) for cluster in clusters]
        # Several clusters shown at once: a section and a status each.
        named = len(watches) > 1 or options["cluster"] is not None
        watch: float | None = options["watch"]
        rounds: int | None = options["rounds"] if watch else 1
        last: list[HealthSnapshot] = []
        done = 0
        try:
            while True:
                started = time.monotonic()
                shown = [w.next_round(first=done == 0) for w in watches]
                last = [r.snapshot for r in shown]
                if named:
                    self.show_clusters(shown, watches, options, first=done == 0)
                else:
                    self.show(shown[0], watches[0].config, options, first=done == 0)
                done += 1
                if watch is None or (rounds is not None and done >= rounds):
                    break
                time.sleep(max(0.0, watch - (time.monotonic() - started)))
        except KeyboardInterrupt:
            if not last:
                raise CommandError(
                    "interrupted before the first check finished",
                    returncode=INTERRUPTED,
                ) from None
        assert last
        worst = max(last, key=lambda snapshot: EXIT_CODES[snapshot.status])
        if EXIT_CODES[worst.status]:
            if named:
                message = "; ".join(
                    f"cluster {w.config.name}: {summary(s)}"
                    for w, s in zip(watches, last, strict=True)
                    if EXIT_CODES[s.status]
                )
            else:
                message = summary(worst)
            raise HealthVerdict(worst.status, message)

    def show_clusters(
        self,
        shown: list[Round],
        watches: list[ClusterWatch],
        options: dict[str, Any],
        *,
        first: bool,
    ) -> None:
        """Print one round of several clusters: a section each, then the worst."""
        statuses = [r.snapshot.status for r in shown]
        worst = max(statuses, key=EXIT_CODES.__getitem__)
        if options["json"]:
            documents = []
            for round_, watch in zip(shown, watches, strict=True):
                document = {"cluster": watch.config.name, **as_json(round_.snapshot)}
                document["source"] = round_.source
                document["notes"] = round_.notes
                documents.append(document)
            indent = None if options["watch"] else 2
            if len(documents) == 1:
                self.stdout.write(json.dumps(documents[0], indent=indent))
            else:
                combined = {"status": worst, "clusters": documents}
                self.stdout.write(json.dumps(combined, indent=indent))
            self.stdout.flush()
            return
        for index, (round_, watch) in enumerate(zip(shown, watches, strict=True)):
            if index:
                self.stdout.write("")
            self.stdout.write(f"cluster {watch.config.name}:")
            # The --watch header (and screen clearing) once, above the first.
            plain = {**options, "json": False, "watch": options["watch"] and not index}
            self.show(round_, watch.config, plain, first=first and not index)
        if len(shown) > 1:
            self.stdout.write(f"status: {worst}")
            self.stdout.flush()

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except HealthVerdict as verdict:
            if not getattr(self, "_called_from_command_line", False):
                raise
            warning = verdict.status == "warning"
            style = self.style.WARNING if warning else self.style.ERROR
            self.stderr.write(f"{verdict.status}: {verdict}", style)
            sys.exit(verdict.returncode)

    def show(
        self,
        shown: Round,
        config: Config,
        options: dict[str, Any],
        *,
        first: bool,
    ) -> None:
        """Print one round as a table (or JSON), refreshing in place when asked."""
        snapshot = shown.snapshot
        watch = options["watch"]
        if options["json"]:
            indent = None if watch else 2
            document = as_json(snapshot)
            document["source"] = shown.source
            document["notes"] = shown.notes
            self.stdout.write(json.dumps(document, indent=indent))
            self.stdout.flush()
            return
        if watch:
            if self.stdout.isatty():
                self.stdout.write(CLEAR_SCREEN, ending="")
            elif not first:
                self.stdout.write("")
            at = datetime.fromtimestamp(snapshot.taken_at).strftime("%H:%M:%S")
            self.stdout.write(
                f"replica_health at {at}, every {watch:g} s "
                f"(timeout {config.check_timeout:g} s); Ctrl-C to stop"
            )
        if shown.source["kind"] == "health_cache":
            self.stdout.write(
                f"the fleet's round from HEALTH_CACHE {shown.source['cache']!r}, "
                f"measured and judged by {shown.source['measured_by']}"
            )
        if options["verbosity"] >= 1:
            for line in render_table(snapshot, verbose=options["verbosity"] >= 2):
                self.stdout.write(line)
            for note in shown.notes:
                self.stdout.write(f"note: {note}")
        styles: dict[str, Callable[[str], str]] = {
            "ok": self.style.SUCCESS,
            "warning": self.style.WARNING,
            "critical": self.style.ERROR,
        }
        status = snapshot.status
        self.stdout.write(styles[status](f"status: {status}"))
        self.stdout.flush()
