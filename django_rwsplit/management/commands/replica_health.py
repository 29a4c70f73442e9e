"""``manage.py replica_health``: measure the primary and the replicas right now."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_rwsplit.conf import Config, get_config
from django_rwsplit.health.probes import probe_for
from django_rwsplit.health.report import (
    summary,
)
from django_rwsplit.health.tracker import HealthSnapshot
from django_rwsplit.management.health_rounds import (
    ClusterWatch,
    Round,
    as_json,
    render_table,
)

# as_json and render_table lived here before the rounds moved out; kept.
__all__ = ["Command", "HealthVerdict", "as_json", "render_table"]

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


def selected_clusters(config: Config, name: str | None) -> list[Config]:
    """The clusters to show: ``name`` alone, or every cluster."""
    try:
        return config.selected(name)
    except KeyError:
        known = ", ".join(c.name for c in config.every_cluster())
        raise CommandError(
            f"no cluster {name!r}; clusters: {known}", returncode=2
        ) from None


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
                documents.append({"cluster": watch.config.name, **round_.document()})
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
            self.stdout.write(json.dumps(shown.document(), indent=indent))
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
