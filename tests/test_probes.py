"""Tests for the client-side-deadline wire helpers and the health probes.

The ``cluster``-marked tests run a real primary + one streaming replica on loopback
(ports 18432/18433 by default, ``RWSPLIT_PROBES_PORT`` to move them) and skip
when the PostgreSQL server binaries are not installed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from django_rwsplit.health.pgwire import (
    APPLICATION_NAME,
    ProbeConnectionError,
    ProbeTimeout,
    conninfo_from_settings,
    describe_endpoint,
    fetch_row,
)
from django_rwsplit.health.probes import (
    PostgresStreamingProbe,
    format_lsn,
    parse_lsn,
    probe_for,
)

if TYPE_CHECKING:
    from django_rwsplit.testing.cluster import LocalCluster

PASSWORD = "s3cr3t-Pa55"
CLOSED_PORT = 18499  # nothing listens here
TIMEOUT = 0.5
SLACK = 0.3


def db(port: int | str, **extra: Any) -> dict[str, Any]:
    """A Django DATABASES entry for a loopback server."""
    entry: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPTIONS": {"sslmode": "disable"},
    }
    entry.update(extra)
    return entry


# --------------------------------------------------------------------------
# LSN helpers
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/1", 1),
        ("1/0", 1 << 32),
        ("16/B374D848", 0x16_B374D848),
        ("16/b374d848", 0x16_B374D848),
        ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
    ],
)
def test_parse_lsn(text: str, value: int) -> None:
    assert parse_lsn(text) == value


def test_parse_lsn_none_and_empty() -> None:
    assert parse_lsn(None) is None
    assert parse_lsn("") is None


@pytest.mark.parametrize(
    "text", ["x", "1/", "/1", "1", "-1/2", "+1/2", "0x1/2", "1/100000000", "1/2/3"]
)
def test_parse_lsn_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid LSN"):
        parse_lsn(text)


@pytest.mark.parametrize("value", [0, 1, 0xFFFFFFFF, 1 << 32, 0x16_B374D848, 2**64 - 1])
def test_format_lsn_round_trip(value: int) -> None:
    text = format_lsn(value)
    assert text == text.upper()
    assert parse_lsn(text) == value


def test_format_lsn_matches_postgres_style() -> None:
    assert format_lsn(0x16_B374D848) == "16/B374D848"
    assert format_lsn(0x1_0000000A) == "1/A"


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_format_lsn_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        format_lsn(value)


# --------------------------------------------------------------------------
# conninfo / endpoint
# --------------------------------------------------------------------------


def test_conninfo_from_settings() -> None:
    from psycopg.conninfo import conninfo_to_dict

    entry = db(
        5433,
        NAME="app",
        USER="web",
        PASSWORD="p w'\\x",
        OPTIONS={
            "sslmode": "require",
            "passfile": "/etc/pgpass",
            "connect_timeout": 5,
            "application_name": "mine",
            "isolation_level": 1,  # Django-only keys are dropped
            "pool": True,
            "server_side_binding": True,
        },
    )
    params = conninfo_to_dict(conninfo_from_settings(entry))
    assert params == {
        "dbname": "app",
        "user": "web",
        "password": "p w'\\x",
        "host": "127.0.0.1",
        "port": "5433",
        "sslmode": "require",
        "passfile": "/etc/pgpass",
        "client_encoding": "UTF8",
        "application_name": APPLICATION_NAME,
    }


def test_conninfo_defaults_and_service() -> None:
    from psycopg.conninfo import conninfo_to_dict

    bare = conninfo_to_dict(conninfo_from_settings({"NAME": None, "HOST": ""}))
    assert bare["dbname"] == "postgres"
    assert "host" not in bare and "port" not in bare and "password" not in bare
    svc = conninfo_to_dict(
        conninfo_from_settings({"NAME": "", "OPTIONS": {"service": "replica_a"}})
    )
    assert svc["service"] == "replica_a"
    assert "dbname" not in svc


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"HOST": "db1.internal", "PORT": 6432}, "db1.internal:6432"),
        ({"HOST": "10.0.0.5", "PORT": ""}, "10.0.0.5:5432"),
        ({"HOST": "::1", "PORT": "5433"}, "[::1]:5433"),
        ({"HOST": "/var/run/postgresql"}, "/var/run/postgresql:5432"),
        ({"HOST": "", "PORT": ""}, "[local]:5432"),
        ({"OPTIONS": {"host": "h", "port": 7}}, "h:7"),
    ],
)
def test_describe_endpoint(entry: dict[str, Any], expected: str) -> None:
    entry = {"NAME": "x", "USER": "u", "PASSWORD": PASSWORD, **entry}
    assert describe_endpoint(entry) == expected
    assert PASSWORD not in describe_endpoint(entry)


def test_connection_errors_never_leak_password() -> None:
    conninfo = conninfo_from_settings(db(CLOSED_PORT, PASSWORD=PASSWORD))
    assert PASSWORD in conninfo
    with pytest.raises(ProbeConnectionError) as info:
        fetch_row(conninfo, "SELECT 1", TIMEOUT)
    assert PASSWORD not in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) <= 200
    with pytest.raises(ProbeConnectionError, match="invalid connection string") as bad:
        fetch_row(f"password={PASSWORD} host", "SELECT 1", TIMEOUT)
    assert PASSWORD not in str(bad.value)


def test_probe_error_never_leaks_password() -> None:
    reading = PostgresStreamingProbe().check_replica(
        "r", db(CLOSED_PORT, PASSWORD=PASSWORD), TIMEOUT
    )
    assert not reading.reachable
    assert reading.error and PASSWORD not in reading.error
    assert PASSWORD not in repr(reading)


# --------------------------------------------------------------------------
# Deadline without a PostgreSQL server
# --------------------------------------------------------------------------


def test_silent_listener_times_out_in_connect_phase() -> None:
    """A socket that completes the handshake but never answers (like a frozen
    server) must not hold fetch_row past its deadline."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accept(): the kernel backlog completes TCP
        port = listener.getsockname()[1]
        conninfo = conninfo_from_settings(db(port, OPTIONS={"sslmode": "prefer"}))
        start = time.monotonic()
        with pytest.raises(ProbeTimeout) as info:
            fetch_row(conninfo, "SELECT 1", 0.25)
        elapsed = time.monotonic() - start
    assert info.value.phase == "connect"
    assert "connect" in str(info.value) and "ms" in str(info.value)
    assert 0.25 <= elapsed < 0.25 + 0.1


# --------------------------------------------------------------------------
# Probe logic with a fake fetch
# --------------------------------------------------------------------------


def fake_fetch(result: tuple[str | None, ...] | BaseException) -> Any:
    def fetch(conninfo: str, sql: str, timeout: float) -> tuple[str | None, ...]:
        fetch.calls.append((conninfo, sql, timeout))  # type: ignore[attr-defined]
        if isinstance(result, BaseException):
            raise result
        return result

    fetch.calls = []  # type: ignore[attr-defined]
    return fetch


def test_fake_primary_reading() -> None:
    fetch = fake_fetch(("f", "16/B374D848", "1700000002.75"))
    before = time.time()
    status = PostgresStreamingProbe(fetch).check_primary("default", db(5433), 2.0)
    assert status.reachable and status.error is None
    assert status.alias == "default" and status.endpoint == "127.0.0.1:5433"
    assert status.in_recovery is False
    assert status.current_lsn == 0x16_B374D848
    assert status.server_time == 1700000002.75
    assert status.latency_ms is not None and status.latency_ms >= 0
    assert before <= status.checked_at <= time.time()
    ((_, sql, timeout),) = fetch.calls
    assert "pg_current_wal_lsn()" in sql and timeout == 2.0


def test_fake_replica_reading() -> None:
    row = (
        "t",
        "f",
        "0/3000148",
        "0/3000200",
        "streaming",
        "1700000000.5",
        "1700000001.25",
    )
    reading = PostgresStreamingProbe(fake_fetch(row)).check_replica("r1", db(1), 1.0)
    assert reading.reachable and reading.error is None
    assert reading.in_recovery is True and reading.replay_paused is False
    assert reading.streaming is True
    assert reading.replay_lsn == 0x3000148 and reading.receive_lsn == 0x3000200
    assert reading.last_replay_at == 1700000000.5
    assert reading.server_time == 1700000001.25


@pytest.mark.parametrize(
    ("status", "streaming"),
    [
        ("streaming", True),
        ("catchup", False),
        ("stopping", False),
        (None, False),
        ("?", None),
    ],
)
def test_fake_replica_streaming_states(
    status: str | None, streaming: bool | None
) -> None:
    row = ("t", "f", None, None, status, None, "1700000000")
    reading = PostgresStreamingProbe(fake_fetch(row)).check_replica("r1", db(1), 1.0)
    assert reading.reachable and reading.streaming is streaming
    assert reading.replay_lsn is None and reading.last_replay_at is None


def test_fake_timeout_and_connection_error() -> None:
    probe = PostgresStreamingProbe(fake_fetch(ProbeTimeout("query", 512.3)))
    status = probe.check_primary("default", db(1), 0.5)
    assert not status.reachable
    assert status.error == "timeout after 500 ms"
    assert status.latency_ms is None and status.current_lsn is None

    probe = PostgresStreamingProbe(fake_fetch(ProbeConnectionError("boom")))
    reading = probe.check_replica("r1", db(1), 0.5)
    assert not reading.reachable and reading.error == "boom"
    assert reading.in_recovery is None and reading.streaming is None


@pytest.mark.parametrize(
    "result",
    [RuntimeError("kaput"), ("t",), ("t", "not-an-lsn")],
    ids=["exception", "short-row", "bad-lsn"],
)
def test_fake_unexpected_failures_are_logged(
    result: Any, caplog: pytest.LogCaptureFixture
) -> None:
    probe = PostgresStreamingProbe(fake_fetch(result))
    with caplog.at_level(logging.WARNING, logger="django_rwsplit"):
        status = probe.check_primary("default", db(1), 0.5)
        reading = probe.check_replica("r1", db(1), 0.5)
    assert not status.reachable and status.error
    assert not reading.reachable and reading.error
    assert status.error.startswith("unexpected error")
    records = [r for r in caplog.records if r.name == "django_rwsplit"]
    assert len(records) == 2 and all(r.levelno == logging.WARNING for r in records)


@pytest.mark.parametrize(
    "engine",
    [
        "django.db.backends.postgresql",
        "django_rwsplit.backends.postgresql",
        "django.contrib.gis.db.backends.postgis",
        "tests.pgcompat",
    ],
)
def test_probe_for_postgres(engine: str) -> None:
    assert isinstance(probe_for({"ENGINE": engine}), PostgresStreamingProbe)


@pytest.mark.parametrize(
    "engine", ["django.db.backends.sqlite3", "django.db.backends.mysql", "", None]
)
def test_probe_for_unknown_engine(engine: str | None) -> None:
    with pytest.raises(ValueError, match="no health probe for ENGINE"):
        probe_for({"ENGINE": engine})


# --------------------------------------------------------------------------
# Real servers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe_cluster() -> Iterator[LocalCluster]:
    """Our own primary + one replica, destroyed after this module."""
    try:
        from django_rwsplit.testing.cluster import (
            ClusterError,
            LocalCluster,
            find_bindir,
        )
    except ImportError as exc:  # pragma: no cover - depends on the checkout
        pytest.skip(f"django_rwsplit.testing.cluster unavailable: {exc}")
    try:
        find_bindir()
    except ClusterError as exc:
        pytest.skip(f"PostgreSQL server binaries missing: {exc}")
    port = int(os.environ.get("RWSPLIT_PROBES_PORT", "18432"))
    nodes = LocalCluster(primary_port=port, replicas=1)  # in its own temp dir
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.destroy()


def primary_db(probe_cluster: LocalCluster) -> dict[str, Any]:
    return db(probe_cluster.primary.port)


def replica_db(probe_cluster: LocalCluster) -> dict[str, Any]:
    return db(probe_cluster.replicas[0].port)


@pytest.mark.cluster
def test_fetch_row_returns_text_and_nulls(probe_cluster: LocalCluster) -> None:
    conninfo = conninfo_from_settings(primary_db(probe_cluster))
    row = fetch_row(
        conninfo, "SELECT 1, NULL, 'é', current_setting('application_name')", 5
    )
    assert row == ("1", None, "é", APPLICATION_NAME)


@pytest.mark.cluster
def test_fetch_row_query_error_is_primary_message_only(
    probe_cluster: LocalCluster,
) -> None:
    conninfo = conninfo_from_settings(primary_db(probe_cluster))
    with pytest.raises(ProbeConnectionError, match=r"^division by zero$"):
        fetch_row(conninfo, "SELECT 1/0", 5)
    with pytest.raises(ProbeConnectionError, match="no rows"):
        fetch_row(conninfo, "SELECT 1 WHERE false", 5)


@pytest.mark.cluster
def test_fetch_row_query_phase_deadline(probe_cluster: LocalCluster) -> None:
    conninfo = conninfo_from_settings(primary_db(probe_cluster))
    start = time.monotonic()
    with pytest.raises(ProbeTimeout) as info:
        fetch_row(conninfo, "SELECT pg_sleep(5)", TIMEOUT)
    elapsed = time.monotonic() - start
    assert info.value.phase == "query"
    assert TIMEOUT <= elapsed < TIMEOUT + 0.1


@pytest.mark.cluster
def test_primary_status(probe_cluster: LocalCluster) -> None:
    status = PostgresStreamingProbe().check_primary(
        "default", primary_db(probe_cluster), 5
    )
    assert status.reachable, status.error
    assert status.error is None
    assert status.in_recovery is False
    assert status.current_lsn is not None and status.current_lsn > 0
    assert status.latency_ms is not None and 0 < status.latency_ms < 5000
    # Same machine, same clock: the primary's now() lies within the check.
    assert status.server_time is not None
    assert status.checked_at - 0.01 <= status.server_time <= time.time() + 0.01
    assert status.endpoint == f"127.0.0.1:{probe_cluster.primary.port}"


@pytest.mark.cluster
def test_primary_check_over_unix_socket(probe_cluster: LocalCluster) -> None:
    entry = primary_db(probe_cluster) | {"HOST": str(probe_cluster.run_dir)}
    status = PostgresStreamingProbe().check_primary("default", entry, 5)
    assert status.reachable, status.error
    assert status.endpoint == f"{probe_cluster.run_dir}:{probe_cluster.primary.port}"


@pytest.mark.cluster
def test_replica_reading(probe_cluster: LocalCluster) -> None:
    probe_cluster.execute(
        "primary",
        "CREATE TABLE IF NOT EXISTS probe_t (i int); INSERT INTO probe_t VALUES (1)",
    )
    probe_cluster.wait_caught_up()
    probe = PostgresStreamingProbe()
    primary = probe.check_primary("default", primary_db(probe_cluster), 5)
    reading = probe.check_replica("replica1", replica_db(probe_cluster), 5)
    assert reading.reachable, reading.error
    assert reading.in_recovery is True
    assert reading.replay_paused is False
    assert reading.streaming is True
    assert primary.current_lsn is not None
    assert reading.replay_lsn is not None and reading.receive_lsn is not None
    assert reading.receive_lsn >= reading.replay_lsn
    assert abs(primary.current_lsn - reading.replay_lsn) < 1024 * 1024
    assert reading.last_replay_at is not None and reading.server_time is not None
    assert abs(reading.server_time - time.time()) < 5
    assert 0 <= reading.server_time - reading.last_replay_at < 60


@pytest.mark.cluster
def test_primary_check_against_replica_and_vice_versa(
    probe_cluster: LocalCluster,
) -> None:
    probe = PostgresStreamingProbe()
    status = probe.check_primary("replica1", replica_db(probe_cluster), 5)
    assert status.reachable and status.in_recovery is True
    assert status.current_lsn is None
    reading = probe.check_replica("default", primary_db(probe_cluster), 5)
    assert reading.reachable, reading.error
    assert reading.in_recovery is False
    assert reading.replay_paused is None and reading.streaming is False
    assert reading.replay_lsn is None and reading.receive_lsn is None


@pytest.mark.cluster
def test_paused_replica(probe_cluster: LocalCluster) -> None:
    probe_cluster.pause_replay("replica1")
    try:
        reading = PostgresStreamingProbe().check_replica(
            "replica1", replica_db(probe_cluster), 5
        )
    finally:
        probe_cluster.resume_replay("replica1")
    assert reading.reachable, reading.error
    assert reading.replay_paused is True
    assert reading.in_recovery is True


@pytest.mark.cluster
def test_unreachable_port_fails_fast(probe_cluster: LocalCluster) -> None:
    start = time.monotonic()
    reading = PostgresStreamingProbe().check_replica(
        "replica9", db(CLOSED_PORT), TIMEOUT
    )
    elapsed = time.monotonic() - start
    assert not reading.reachable
    assert reading.error and "refused" in reading.error.lower()
    assert reading.latency_ms is None and reading.in_recovery is None
    assert elapsed < TIMEOUT


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


@pytest.mark.cluster
def test_frozen_server_times_out(probe_cluster: LocalCluster) -> None:
    pid = _postmaster_pid(probe_cluster.replicas[0].data_dir)
    probe = PostgresStreamingProbe()
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        reading = probe.check_replica("replica1", replica_db(probe_cluster), TIMEOUT)
        elapsed = time.monotonic() - start
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not reading.reachable
    assert reading.error == "timeout after 500 ms"
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK
    # Back to normal once thawed.
    reading = probe.check_replica("replica1", replica_db(probe_cluster), 5)
    assert reading.reachable, reading.error
