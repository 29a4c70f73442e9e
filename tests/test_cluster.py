"""Tests for the local PostgreSQL test cluster (real servers, no Django)."""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from django_rwsplit.testing import __main__ as cli
from django_rwsplit.testing import processes
from django_rwsplit.testing.cluster import ClusterError, LocalCluster

# No Django here: the tool behaves the same under every Django version.
pytestmark = [pytest.mark.cluster, pytest.mark.long]

PORT = 16432  # the lead's suite uses 15432
_ids = itertools.count(1)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    try:
        processes.find_bindir()
    except ClusterError as exc:
        pytest.skip(str(exc))
    c = LocalCluster(primary_port=PORT)
    try:
        c.start()
        c.execute("primary", "CREATE TABLE items (id int PRIMARY KEY)")
        c.wait_caught_up()
        yield c
    finally:
        c.destroy()


@pytest.fixture(autouse=True)
def healthy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Undo any fault a test injected, even when it failed."""
    yield
    if "cluster" not in request.fixturenames:
        return
    c: LocalCluster = request.getfixturevalue("cluster")
    c.start()  # thaws frozen nodes and starts stopped ones
    for r in c.replicas:
        c.resume_replay(r)
        c.set_apply_delay(r, 0)


def insert(c: LocalCluster) -> int:
    """Insert a fresh row on the primary; return its id."""
    row_id = next(_ids)
    c.execute("primary", "INSERT INTO items VALUES (%s)", params=[row_id])
    return row_id


def has_row(c: LocalCluster, node: str, row_id: int) -> bool:
    rows = c.execute(node, "SELECT 1 FROM items WHERE id = %s", params=[row_id])
    return bool(rows)


def test_replicas_are_streaming_standbys(cluster: LocalCluster) -> None:
    assert cluster.is_running()
    assert cluster.execute("primary", "SELECT pg_is_in_recovery()") == [(False,)]
    senders = cluster.execute(
        "primary",
        "SELECT application_name, state FROM pg_stat_replication ORDER BY 1",
    )
    assert senders == [("replica1", "streaming"), ("replica2", "streaming")]
    slots = cluster.execute(
        "primary", "SELECT slot_name, active FROM pg_replication_slots ORDER BY 1"
    )
    assert slots == [("replica1", True), ("replica2", True)]
    for r in ("replica1", "replica2"):
        assert cluster.execute(r, "SELECT pg_is_in_recovery()") == [(True,)]
        status = cluster.execute(r, "SELECT status FROM pg_stat_wal_receiver")
        assert status == [("streaming",)]
        with pytest.raises(ClusterError, match="read-only"):
            cluster.execute(r, "INSERT INTO items VALUES (-1)")
    assert cluster.node(1) is cluster.node("replica1")
    assert cluster.node("primary").port == PORT
    assert cluster.replicas[1].port == PORT + 2
    with pytest.raises(ClusterError, match="no node"):
        cluster.node("replica9")


def test_row_written_on_primary_reaches_both_replicas(cluster: LocalCluster) -> None:
    row_id = insert(cluster)
    for r in ("replica1", "replica2"):
        assert wait_for(functools.partial(has_row, cluster, r, row_id)), r


@pytest.mark.long
def test_a_second_cluster_is_independent(
    cluster: LocalCluster, rwsplit_second_cluster: LocalCluster
) -> None:
    """Two primaries with their own replicas: a table on one is not on the other."""
    second = rwsplit_second_cluster
    assert {n.port for n in second.nodes}.isdisjoint(n.port for n in cluster.nodes)

    def identity(c: LocalCluster, node: str) -> int:
        return int(
            c.execute(node, "SELECT system_identifier FROM pg_control_system()")[0][0]
        )

    assert identity(second, "primary") != identity(cluster, "primary")
    assert identity(second, "replica1") == identity(second, "primary")
    second.execute("primary", "CREATE TABLE IF NOT EXISTS only_on_second (id int)")
    second.wait_caught_up()
    exists = "SELECT to_regclass('only_on_second') IS NOT NULL"
    assert all(second.execute(r.name, exists)[0][0] for r in second.replicas)
    assert not any(cluster.execute(n.name, exists)[0][0] for n in cluster.nodes)


def test_pause_replay_hides_new_rows_until_resume(cluster: LocalCluster) -> None:
    cluster.pause_replay("replica1")
    state = cluster.execute("replica1", "SELECT pg_get_wal_replay_pause_state()")
    assert state == [("paused",)]
    row_id = insert(cluster)
    lsn = cluster.execute("primary", "SELECT pg_current_wal_lsn()::text")[0][0]
    cluster.wait_caught_up("replica2")
    assert has_row(cluster, "replica2", row_id)
    # replica1 receives the WAL but does not apply it
    received = "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn"
    assert wait_for(lambda: cluster.execute("replica1", received, params=[lsn])[0][0])
    time.sleep(0.3)
    assert not has_row(cluster, "replica1", row_id)
    with pytest.raises(ClusterError, match="timed out"):
        cluster.wait_caught_up("replica1", timeout=0.3)
    cluster.resume_replay("replica1")
    assert wait_for(lambda: has_row(cluster, "replica1", row_id))


def test_apply_delay_delays_visibility(cluster: LocalCluster) -> None:
    cluster.set_apply_delay("replica1", 1500)
    assert cluster.execute("replica1", "SHOW recovery_min_apply_delay") == [("1500ms",)]
    started = time.monotonic()
    row_id = insert(cluster)
    assert wait_for(lambda: has_row(cluster, "replica2", row_id))
    assert time.monotonic() - started < 1.0
    assert not has_row(cluster, "replica1", row_id)
    assert wait_for(lambda: has_row(cluster, "replica1", row_id))
    assert time.monotonic() - started >= 1.2
    cluster.set_apply_delay("replica1", 0)
    assert cluster.execute("replica1", "SHOW recovery_min_apply_delay") == [("0",)]
    row_id = insert(cluster)
    assert wait_for(lambda: has_row(cluster, "replica1", row_id), timeout=1.0)


def test_stop_and_start_replica_is_quick_and_catches_up(
    cluster: LocalCluster,
) -> None:
    started = time.monotonic()
    cluster.stop_replica("replica2")
    assert not cluster.node_running("replica2")
    assert not cluster.is_running()
    with pytest.raises(ClusterError, match="cannot connect"):
        cluster.execute("replica2", "SELECT 1")
    row_id = insert(cluster)
    cluster.start_replica("replica2")
    assert time.monotonic() - started < 15
    cluster.wait_caught_up("replica2", timeout=10)
    assert has_row(cluster, "replica2", row_id)
    assert cluster.is_running()


def test_freeze_blocks_connections_until_thaw(cluster: LocalCluster) -> None:
    node = cluster.node("replica1")
    cluster.freeze(node)
    assert cluster.is_frozen(node)
    pid = cluster.postmaster_pid(node)
    assert pid is not None
    family = [pid, *processes.descendants(pid)]
    assert len(family) > 3  # postmaster, startup, walreceiver, checkpointer...
    for p in family:
        assert (processes.proc_stat(p) or ("", "?", 0))[1] == "T", p

    result: dict[str, Any] = {}

    def connect() -> None:
        try:
            with psycopg.connect(node.dsn(), connect_timeout=10) as conn:
                result["value"] = conn.execute("SELECT 1").fetchone()
        except Exception as exc:  # reported through the assertion below
            result["value"] = exc

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(1.5)
    assert thread.is_alive(), "a frozen server completed a connection"
    started = time.monotonic()
    with pytest.raises(ClusterError, match="frozen"):
        cluster.execute(node, "SELECT 1")
    assert time.monotonic() - started < 0.5

    cluster.thaw(node)
    assert not cluster.is_frozen(node)
    thread.join(5)
    assert not thread.is_alive()
    assert result["value"] == (1,)
    row_id = insert(cluster)
    assert wait_for(lambda: has_row(cluster, "replica1", row_id))


def test_stale_postmaster_pid_is_cleaned(cluster: LocalCluster) -> None:
    node = cluster.node("replica2")
    pid_file = node.data_dir / "postmaster.pid"
    lock_file = cluster.run_dir / f".s.PGSQL.{node.port}.lock"
    pid_lines = pid_file.read_text().splitlines()
    lock_lines = lock_file.read_text().splitlines()
    cluster.stop_replica(node, mode="fast")
    assert not pid_file.exists()
    # a dead but unreaped process of the server's OS user: kill(pid, 0) works
    zombie = subprocess.Popen(["true"], user=cluster.os_user)
    try:
        assert wait_for(lambda: (processes.proc_stat(zombie.pid) or "??")[1] == "Z")
        pid_file.write_text("\n".join([str(zombie.pid), *pid_lines[1:]]) + "\n")
        lock_file.write_text("\n".join([str(zombie.pid), *lock_lines[1:]]) + "\n")
        assert not cluster.node_running(node)
        cluster.start_replica(node)
        assert cluster.postmaster_pid(node) not in (None, zombie.pid)
        assert cluster.execute(node, "SELECT pg_is_in_recovery()") == [(True,)]
    finally:
        zombie.wait()


def test_execute_has_client_side_deadline(cluster: LocalCluster) -> None:
    started = time.monotonic()
    with pytest.raises(ClusterError, match="timed out"):
        cluster.execute("primary", "SELECT pg_sleep(10)", timeout=0.5)
    assert time.monotonic() - started < 3
    assert cluster.execute("primary", "SELECT 1") == [(1,)]


def test_create_database_and_django_settings(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.create_database("rwsplit_extra")
    cluster.create_database("rwsplit_extra")  # idempotent
    for r in ("replica1", "replica2"):
        rows = cluster.execute(r, "SELECT 1", dbname="rwsplit_extra")
        assert rows == [(1,)]

    dbs = cluster.django_databases("rwsplit_extra", options={"connect_timeout": 2})
    assert list(dbs) == ["default", "replica1", "replica2"]
    assert dbs["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert dbs["default"]["PORT"] == str(PORT)
    assert dbs["default"]["HOST"] == "127.0.0.1"
    assert "TEST" not in dbs["default"]
    assert dbs["replica2"]["PORT"] == str(PORT + 2)
    assert dbs["replica1"]["TEST"] == {"MIRROR": "default"}
    assert dbs["replica1"]["OPTIONS"] == {"connect_timeout": 2}
    assert "TEST" not in cluster.django_databases("x", test_mirror=False)["replica1"]

    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)
    attached = LocalCluster.from_env()
    assert attached is not None
    assert attached.base_dir == cluster.base_dir
    assert [n.port for n in attached.nodes] == [PORT, PORT + 1, PORT + 2]
    assert attached.is_running()
    assert not attached.owns_dir
    monkeypatch.delenv("RWSPLIT_CLUSTER_DIR")
    assert LocalCluster.from_env() is None


def test_cli_status_and_errors(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["status", "--dir", str(cluster.base_dir)]) == 0
    out = capsys.readouterr().out
    assert "replica2" in out and str(PORT + 1) in out
    assert cli.main(["status", "--dir", str(tmp_path / "none")]) == 2
    assert "no cluster" in capsys.readouterr().err
    assert cli.main(["up", "--dir", str(cluster.base_dir), "--port", "17999"]) == 2
    assert "uses port" in capsys.readouterr().err


def test_missing_binaries_give_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(processes, "REQUIRED_BINARIES", ("initdb", "no_such_pg_binary"))
    with pytest.raises(ClusterError, match="apt-get install postgresql"):
        processes.find_bindir()
    target = tmp_path / "c"
    assert cli.main(["up", "--dir", str(target), "--port", "17990"]) == 2
    assert "PostgreSQL server binaries not found" in capsys.readouterr().err
    assert not target.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs an OS user")
def test_unknown_os_user_is_reported() -> None:
    with pytest.raises(ClusterError, match="does not exist"):
        LocalCluster(os_user="no_such_user_rwsplit", primary_port=17980)
