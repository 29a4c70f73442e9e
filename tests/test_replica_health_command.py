"""``manage.py replica_health`` against the real primary and streaming replicas."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import override_settings

from django_rwsplit.health import monitor
from tests.ports import free_port
from tests.utils import fast_health, start_health, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

ROOT = Path(__file__).resolve().parent.parent
REPLICAS = ("replica1", "replica2")
PRIMARY_KEYS = {"alias", "reachable", "latency_ms", "error"}
REPLICA_KEYS = {
    "alias",
    "in_rotation",
    "reachable",
    "in_recovery",
    "replay_paused",
    "lag_seconds",
    "lag_bytes",
    "latency_ms",
    "error",
}
COLUMNS = (
    "alias",
    "host:port",
    "role",
    "in rotation",
    "lag (s)",
    "lag (bytes)",
    "check latency (ms)",
    "error",
)
EXIT_CODES = {"ok": 0, "warning": 1, "critical": 2}
SECRET = "pw-Sh0uld-N3ver-Show"

T = TypeVar("T")


@dataclass
class Result:
    """What one ``call_command`` printed and how it ended."""

    code: int
    out: str
    err: str
    message: str

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out)
        return data

    def replica(self, alias: str) -> dict[str, Any]:
        return next(r for r in self.json["replicas"] if r["alias"] == alias)


def run(*args: str, stdout: StringIO | None = None) -> Result:
    """Run the command in-process; a CommandError becomes its exit status."""
    out, err = stdout or StringIO(), StringIO()
    try:
        call_command("replica_health", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return Result(exc.returncode, out.getvalue(), err.getvalue(), str(exc))
    return Result(0, out.getvalue(), err.getvalue(), "")


def until(attempt: Callable[[], T], ok: Callable[[T], bool], timeout: float = 15) -> T:
    """Repeat ``attempt`` until ``ok`` holds or ``timeout`` passes; return the last.

    Guards expectations about *healthy* replicas against WAL the idle primary
    writes by itself (running-xacts records) being in flight at that instant.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if ok(result) or time.monotonic() >= deadline:
            return result
        time.sleep(0.05)


def database_name() -> str:
    return str(connections["default"].settings_dict["NAME"])


def write_rows(cluster, count: int = 5) -> None:
    """Insert rows on the primary, in the test database, outside Django."""
    cluster.execute(
        "primary",
        "INSERT INTO testapp_item (name, version)"
        " SELECT 'row ' || i, i FROM generate_series(1, %s) AS i",
        dbname=database_name(),
        params=[count],
    )


def table_rows(out: str) -> dict[str, str]:
    """Map alias to its table line (skipping header, rule and status line)."""
    lines = [
        line
        for line in out.splitlines()[2:]
        if not line.startswith(("status:", "note:"))
    ]
    return {line.split()[0]: line for line in lines}


def all_caught_up(result: Result) -> bool:
    return result.code == 0 and all(
        r["lag_bytes"] == 0 and r["lag_seconds"] == 0 for r in result.json["replicas"]
    )


def healthy_json(cluster) -> Result:
    def attempt() -> Result:
        cluster.wait_caught_up()
        return run("--json")

    return until(attempt, all_caught_up)


class RoundHook(StringIO):
    """A stdout that runs the next action each time a round's last line is written."""

    def __init__(self, marks_round: Callable[[str], bool], *actions: Callable[[], Any]):
        super().__init__()
        self.marks_round = marks_round
        self.actions = list(actions)

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.marks_round(text) and self.actions:
            self.actions.pop(0)()
        return written


# --------------------------------------------------------------------------
# Healthy cluster
# --------------------------------------------------------------------------


def test_healthy_cluster_is_ok_with_zero_lag(cluster):
    result = healthy_json(cluster)
    assert result.code == 0, result.message
    data = result.json
    assert data["status"] == "ok"
    assert data["primary"]["reachable"] is True
    assert data["primary"]["error"] is None
    for replica in data["replicas"]:
        assert replica["in_rotation"] is True
        assert replica["lag_seconds"] == 0
        assert replica["lag_bytes"] == 0
        assert replica["error"] is None
    assert result.err == ""


def test_table_is_aligned_and_ends_with_the_status(cluster, ports):
    cluster.wait_caught_up()
    result = until(lambda: run(), lambda r: r.code == 0)
    assert result.code == 0, result.message
    lines = result.out.splitlines()
    header = lines[0]
    for column in COLUMNS:
        assert column in header
    assert set(lines[1]) == {"-", " "}
    assert lines[-1] == "status: ok"
    rows = table_rows(result.out)
    assert list(rows) == ["default", *REPLICAS]
    role_at = header.index("role")
    for alias, row in rows.items():
        assert f"127.0.0.1:{ports[alias]}" in row
        assert row[role_at:].split()[0] == (
            "primary" if alias == "default" else "replica"
        )
        assert row == row.rstrip()
    assert rows["default"][header.index("in rotation") :].split()[0] == "-"
    for alias in REPLICAS:
        rotation, lag_s, lag_b = rows[alias][header.index("in rotation") :].split()[:3]
        assert (rotation, lag_s, lag_b) == ("yes", "0.00", "0")
        # Right-aligned numbers end under the end of their column titles.
        end = header.index("lag (bytes)") + len("lag (bytes)")
        assert rows[alias][end - 1] == "0" and rows[alias][end] == " "


def test_verbose_table_adds_recovery_columns(cluster):
    cluster.wait_caught_up()
    result = until(lambda: run("-v", "2"), lambda r: r.code == 0)
    header = result.out.splitlines()[0]
    for column in ("in recovery", "replay paused", "streaming", "replay LSN"):
        assert column in header
    rows = table_rows(result.out)
    start = header.index("in recovery")
    for alias in REPLICAS:
        recovery, paused, streaming, lsn = rows[alias][start:].split()[:4]
        assert (recovery, paused, streaming) == ("yes", "no", "yes")
        assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", lsn)
    assert rows["default"][start:].split()[0] == "no"


def test_json_schema(cluster):
    data = healthy_json(cluster).json
    assert {"status", "primary", "replicas"} <= set(data)
    assert data["status"] in EXIT_CODES
    primary = data["primary"]
    assert set(primary) >= PRIMARY_KEYS
    assert primary["alias"] == "default"
    assert primary["reachable"] is True
    assert isinstance(primary["latency_ms"], float)
    assert primary["error"] is None
    assert [r["alias"] for r in data["replicas"]] == list(REPLICAS)
    for replica in data["replicas"]:
        assert set(replica) >= REPLICA_KEYS
        for key in ("in_rotation", "reachable", "in_recovery", "replay_paused"):
            assert isinstance(replica[key], bool), key
        assert isinstance(replica["lag_seconds"], int | float)
        assert not isinstance(replica["lag_seconds"], bool)
        assert type(replica["lag_bytes"]) is int
        assert isinstance(replica["latency_ms"], float)
        assert replica["error"] is None or isinstance(replica["error"], str)


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


def test_paused_replica_behind_a_writing_primary_is_out(cluster):
    cluster.wait_caught_up()
    cluster.pause_replay("replica1")
    write_rows(cluster)

    def attempt() -> Result:
        cluster.wait_caught_up("replica2")
        return run("--json")

    with override_settings(RWSPLIT={**settings.RWSPLIT, "MAX_LAG_BYTES": 1}):
        result = until(attempt, lambda r: r.replica("replica2")["in_rotation"])
    assert result.code == 1, result.message
    assert result.json["status"] == "warning"
    replica1 = result.replica("replica1")
    assert replica1["in_rotation"] is False
    assert replica1["reachable"] is True
    assert replica1["replay_paused"] is True
    assert replica1["lag_bytes"] > 0
    assert "lag" in replica1["error"]
    assert result.replica("replica2")["lag_bytes"] == 0
    assert result.message.startswith("1 replica out of rotation: replica1 (lag")
    # Measured here, not by the fleet; a lag timed without history says so.
    assert result.json["source"] == {"kind": "measured"}
    if replica1["lag_seconds"]:
        assert any(n.startswith("replica1: lag ") for n in result.json["notes"])


def test_with_health_cache_the_command_shows_the_fleets_round(cluster):
    """One snapshot, one verdict: the figures of the process measuring for all."""
    caches["redis"].clear()
    cluster.wait_caught_up()
    fleet = {**fast_health(), "HEALTH_CACHE": "redis", "MAX_LAG_SECONDS": 0.5}
    with override_settings(RWSPLIT=fleet):
        state = start_health()
        cluster.pause_replay("replica1")
        try:

            def replica1_lag() -> float:
                status = state.status("replica1")
                return (status.lag_seconds or 0.0) if status else 0.0

            write_rows(cluster)
            wait_until(lambda: not state.in_rotation("replica1"), timeout=10)
            before = replica1_lag()
            result = run("--json")
            after = replica1_lag()
        finally:
            cluster.resume_replay("replica1")
    assert result.code == 1, result.message
    data = result.json
    assert data["source"] == {
        "kind": "health_cache",
        "cache": "redis",
        "measured_by": f"{socket.gethostname()} {os.getpid()}",
    }
    replica1 = result.replica("replica1")
    assert replica1["in_rotation"] is False
    # A round the app applied while the command ran: its lag, not a figure
    # of the command's own.
    # (The JSON rounds to milliseconds.)
    assert before - 0.001 <= replica1["lag_seconds"] <= after + 0.001


def test_with_health_cache_and_no_process_measuring_the_command_measures(cluster):
    caches["redis"].clear()
    with override_settings(RWSPLIT={**fast_health(), "HEALTH_CACHE": "redis"}):
        result = until(lambda: run("--json"), lambda r: r.code == 0)
    assert result.json["source"] == {"kind": "measured"}
    assert "no fresh round in HEALTH_CACHE 'redis'" in result.json["notes"][0]


def test_stopped_replica_is_out_with_an_error(cluster):
    cluster.stop_replica("replica2")

    def attempt() -> Result:
        cluster.wait_caught_up()
        return run("--json")

    result = until(attempt, lambda r: r.replica("replica1")["in_rotation"])
    assert result.code == 1, result.message
    assert result.json["status"] == "warning"
    replica2 = result.replica("replica2")
    assert replica2["in_rotation"] is False
    assert replica2["reachable"] is False
    assert replica2["lag_bytes"] is None
    assert replica2["error"].startswith("unreachable: ")
    assert result.message.startswith("1 replica out of rotation: replica2 (unreach")

    table = until(lambda: run(), lambda r: r.code == 1)
    assert table.code == 1
    assert "unreachable: " in table_rows(table.out)["replica2"]
    assert table.out.splitlines()[-1] == "status: warning"


def test_both_replicas_stopped_is_critical(cluster):
    for alias in REPLICAS:
        cluster.stop_replica(alias)
    result = run("--json")
    assert result.code == 2
    assert result.json["status"] == "critical"
    assert not any(r["in_rotation"] for r in result.json["replicas"])
    assert result.message.startswith("no replica in rotation: replica1 (unreachable")


def test_primary_stopped_is_critical(cluster):
    cluster.wait_caught_up()
    cluster.stop_primary()
    try:
        result = run("--json")
        table = run()
    finally:
        cluster.start_primary()
        cluster.wait_caught_up(timeout=60)
        connections.close_all()  # their sockets died with the primary
    assert result.code == 2
    data = result.json
    assert data["status"] == "critical"
    assert data["primary"]["reachable"] is False
    assert data["primary"]["error"]
    # As a running process does: replicas holding all the primary was known
    # to have (here: the furthest replayed position) keep serving reads.
    furthest = max(r["replay_lsn"] for r in data["replicas"])
    for replica in data["replicas"]:
        assert replica["in_rotation"] is (replica["replay_lsn"] == furthest), replica
    assert any("furthest position a replica has replayed" in n for n in data["notes"])
    assert result.message.startswith("primary default unreachable: ")
    assert table.code == 2
    assert "unreachable: " in table_rows(table.out)["default"]
    assert table.out.splitlines()[-1] == "status: critical"


def test_frozen_replica_times_out_quickly(cluster):
    cluster.wait_caught_up()
    cluster.freeze("replica2")
    started = time.monotonic()
    result = run("--json", "--timeout", "0.5")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    replica2 = result.replica("replica2")
    assert replica2["reachable"] is False
    assert "timeout" in replica2["error"]
    assert result.code == 1, result.message


# --------------------------------------------------------------------------
# --watch
# --------------------------------------------------------------------------


def test_watch_prints_rounds_separated_by_a_blank_line(cluster):
    cluster.wait_caught_up()
    result = run("--watch", "0.1", "--rounds", "2")
    assert "\x1b" not in result.out
    rounds = result.out.split("\n\n")
    assert len(rounds) == 2
    statuses = []
    for text in rounds:
        lines = text.strip().splitlines()
        assert lines[0].startswith("replica_health at ")
        assert "every 0.1 s" in lines[0]
        assert lines[1].startswith("alias")
        assert lines[-1].startswith("status: ")
        statuses.append(lines[-1].removeprefix("status: "))
    assert result.code == EXIT_CODES[statuses[-1]]


def test_watch_json_prints_one_document_per_round(cluster):
    cluster.wait_caught_up()
    result = run("--json", "--watch", "0.1", "--rounds", "3")
    documents = [json.loads(line) for line in result.out.splitlines()]
    assert len(documents) == 3
    assert all(set(r) >= REPLICA_KEYS for d in documents for r in d["replicas"])
    assert result.code == EXIT_CODES[documents[-1]["status"]]


def test_watch_without_a_value_uses_two_seconds_and_zero_is_refused(cluster):
    result = run("--watch", "--rounds", "1")
    assert "every 2 s" in result.out.splitlines()[0]
    refused = run("--watch", "0")
    assert "greater than zero" in refused.message
    assert refused.code != 0


def test_watch_keeps_one_tracker_so_readmission_waits(cluster):
    """A replica back under the bound rejoins only after READMIT_AFTER rounds."""
    cluster.wait_caught_up()

    def fall_behind() -> None:
        cluster.pause_replay("replica1")
        write_rows(cluster)
        cluster.wait_caught_up("replica2")

    def catch_up() -> None:
        cluster.resume_replay("replica1")
        cluster.wait_caught_up("replica1")

    out = RoundHook(lambda text: text.startswith("{"), fall_behind, catch_up)
    rwsplit = {**settings.RWSPLIT, "MAX_LAG_BYTES": 1, "READMIT_AFTER": 2}
    with override_settings(RWSPLIT=rwsplit):
        result = run("--json", "--watch", "0.05", "--rounds", "4", stdout=out)
    documents = [json.loads(line) for line in result.out.splitlines()]
    replica1 = [
        next(r for r in d["replicas"] if r["alias"] == "replica1") for d in documents
    ]
    assert [r["in_rotation"] for r in replica1] == [True, False, False, True]
    assert replica1[2]["lag_bytes"] == 0
    assert replica1[2]["error"] is None


def test_interrupt_ends_watch_with_the_last_status(cluster):
    def interrupt() -> None:
        raise KeyboardInterrupt

    out = RoundHook(lambda text: text.startswith("status:"), lambda: None, interrupt)
    result = run("--watch", "0.05", stdout=out)
    statuses = [line for line in result.out.splitlines() if line.startswith("status:")]
    assert len(statuses) == 2
    assert result.code == EXIT_CODES[statuses[-1].removeprefix("status: ")]


def test_interrupt_before_the_first_round_is_unknown(cluster, monkeypatch):
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(monitor, "measure", interrupted)
    result = run("--watch")
    assert result.code == 3
    assert result.out == ""


# --------------------------------------------------------------------------
# Configuration and secrets
# --------------------------------------------------------------------------


def test_misconfigured_rwsplit_exits_2_with_a_clear_message(cluster):
    with override_settings(RWSPLIT={"REPLICAS": ["ghost"], "CHECK_TIMEOUT": 0}):
        result = run("--json")
    assert result.code == 2
    assert result.out == ""
    assert result.message.startswith("RWSPLIT is misconfigured: ")
    assert "'ghost'" in result.message
    assert "rwsplit.E005" in result.message
    assert "CHECK_TIMEOUT" in result.message


def test_password_is_never_printed(cluster, monkeypatch):
    for alias in ("default", *REPLICAS):
        monkeypatch.setitem(connections.settings[alias], "PASSWORD", SECRET)
    # An unreachable replica, so an error message is printed too.
    monkeypatch.setitem(connections.settings["replica2"], "PORT", str(free_port()))
    results = [
        run(),
        run("-v", "2"),
        run("--json"),
        run("--json", "--watch", "0.05", "--rounds", "2"),
    ]
    for result in results:
        assert result.code != 0
        assert SECRET not in result.out + result.err + result.message
        assert "password" not in (result.out + result.message).lower()
    assert results[2].replica("replica2")["error"].startswith("unreachable: ")


# --------------------------------------------------------------------------
# A real process
# --------------------------------------------------------------------------


def manage(
    cluster, tmp_path: Path, settings_body: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m django replica_health --json`` with the given settings."""
    module = tmp_path / "health_settings.py"
    module.write_text(
        "from tests.settings import *  # noqa: F403\n" + textwrap.dedent(settings_body)
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "health_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "RWSPLIT_CLUSTER_PORT": str(cluster.primary.port),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "replica_health", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_real_process_exit_status_and_pure_json_stdout(cluster, tmp_path):
    cluster.wait_caught_up()
    cluster.pause_replay("replica1")
    write_rows(cluster)
    body = f"""
        for _entry in DATABASES.values():  # noqa: F405
            _entry["NAME"] = {database_name()!r}
        RWSPLIT = {{**RWSPLIT, "MAX_LAG_BYTES": 1}}  # noqa: F405
    """

    def attempt() -> subprocess.CompletedProcess[str]:
        cluster.wait_caught_up("replica2")
        return manage(cluster, tmp_path, body)

    proc = until(attempt, lambda p: p.returncode == 1)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "warning"
    # A verdict, not a crash: no CommandError styling, the exit status kept.
    assert proc.stderr.startswith("warning: 1 replica out of rotation: replica1")
    assert "CommandError" not in proc.stderr


def test_real_process_reports_bad_settings_without_system_checks(cluster, tmp_path):
    proc = manage(cluster, tmp_path, 'RWSPLIT = {"REPLICAS": ["ghost"]}')
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "CommandError: RWSPLIT is misconfigured: " in proc.stderr
    assert "rwsplit.E005" in proc.stderr
    assert "SystemCheckError" not in proc.stderr
