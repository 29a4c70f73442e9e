"""
A primary that moves, on a real cluster of its own: promote, re-point, split brain.

Each test starts a fresh three-node cluster (the drill changes its roles for
good) and runs tests/failover_drill.py in a process of its own: the primary
alias lists every node, as Patroni users write it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_rwsplit.testing.cluster import LocalCluster
from tests.utils import fresh_cluster

pytestmark = pytest.mark.cluster

DRILL = Path(__file__).with_name("failover_drill.py")
# CHECK_INTERVAL of the drill (0.25 s) + a connect, with generous slack for a
# loaded 2-core machine.
RESUME_BOUND = 10.0


@pytest.fixture
def moving_cluster() -> Iterator[LocalCluster]:
    with fresh_cluster(20) as local:
        yield local


def drill(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, str(DRILL), "--dir", str(cluster.base_dir), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ports_of(outcomes: list[dict[str, Any]]) -> set[Any]:
    return {o.get("port", o.get("error")) for o in outcomes}


@pytest.mark.parametrize("shape", ["per_request", "persistent", "pool"])
def test_writes_follow_the_promoted_node_and_never_reach_the_old_one(
    moving_cluster: LocalCluster, shape: str
) -> None:
    result = drill(moving_cluster, "--shape", shape)
    ports = result["ports"]
    old, new = ports["primary"], ports["replica1"]
    assert ports_of(result["before"]) == {old}
    assert result["resumed_after"] is not None, result["switch"]
    assert result["resumed_after"] < RESUME_BOUND, result["switch"]
    assert result["switch"][-1].get("port") == new, result["switch"]
    # Two writable nodes: every write goes to the newer timeline's.
    assert ports_of(result["split_brain"]) == {new}, result["split_brain"]
    assert ports_of(result["fresh_process"]) == {new}, result["fresh_process"]
    if shape != "pool":
        assert ports_of(result["forked_child"]) == {new}, result["forked_child"]
    assert result["primary_node"] == f"127.0.0.1:{new}"
    # Plain reads meanwhile: none failed, none on the promoted node's replica
    # alias, none served by the old primary.
    reads = result["plain_reads"]
    assert reads and not [r for r in reads if "error" in r], reads
    assert not [r for r in reads if r["alias"] == "replica1"], reads
    assert old not in {r["port"] for r in reads}, reads
    assert result["fenced"] == [f"127.0.0.1:{old} (timeline 1)"]
    signals = {e["name"] for e in result["events"]}
    assert signals == {"primary_changed", "primary_fenced"}, result["events"]
    # Operators see it: critical, "two writable nodes", the metrics.
    assert result["status"] == "critical"
    # Each node's role and timeline, and when writes moved (page, command).
    replica2 = ports["replica2"]
    assert result["node_roles"] == {
        f"127.0.0.1:{old}": ["fenced", 1],
        f"127.0.0.1:{new}": ["primary", 2],
        f"127.0.0.1:{replica2}": ["standby", 2],
    }, result["node_roles"]
    assert result["changed_at"] is not None
    assert any("fenced (timeline 1)" in line for line in result["table"])
    assert any(line.startswith("writes last moved to") for line in result["table"])
    assert "two writable nodes" in result["summary"]
    if result["metrics"] is not None:
        assert result["metrics"]["rwsplit_primary_writable_nodes"] == 2
        assert result["metrics"]["rwsplit_primary_changes_total"] == 1
    # Rejoined as a standby of the new primary: one writable node again.
    assert ports_of(result["after_rejoin"]) == {new}, result["after_rejoin"]
    assert result["fenced_after_rejoin"] == []


def test_a_switchover_moves_writes_without_losing_one(
    moving_cluster: LocalCluster,
) -> None:
    result = drill(moving_cluster, "--switchover")
    ports = result["ports"]
    new = ports["replica1"]
    assert result["resumed_after"] is not None, result["switch"]
    assert result["resumed_after"] < RESUME_BOUND, result["switch"]
    assert ports_of(result["split_brain"]) == {new}, result["split_brain"]
    assert ports_of(result["after_rejoin"]) == {new}, result["after_rejoin"]


def test_after_a_crash_failover_the_old_primary_gets_no_writes(
    moving_cluster: LocalCluster,
) -> None:
    result = drill(moving_cluster, "--crash")
    ports = result["ports"]
    new = ports["replica1"]
    assert result["resumed_after"] is not None, result["switch"]
    assert result["resumed_after"] < RESUME_BOUND, result["switch"]
    assert ports_of(result["split_brain"]) == {new}, result["split_brain"]
    assert ports_of(result["fresh_process"]) == {new}, result["fresh_process"]


def test_djangos_own_engine_writes_to_the_old_primary(
    moving_cluster: LocalCluster,
) -> None:
    """The control: libpq alone takes the first writable host, the old primary."""
    result = drill(moving_cluster, "--engine", "django.db.backends.postgresql")
    old = result["ports"]["primary"]
    assert old in ports_of(result["split_brain"] + result["fresh_process"])


def test_with_primary_wait_no_write_fails_during_the_switch(
    moving_cluster: LocalCluster,
) -> None:
    """Without PRIMARY_WAIT, writes between the stop and the promotion fail."""
    result = drill(moving_cluster, "--primary-wait", "10")
    new = result["ports"]["replica1"]
    failed = [o for o in result["switch"] if "error" in o]
    # The one write in flight at the stop may be cut (outcome unknown, never
    # replayed); every write that found no primary waited for one instead.
    assert all(o["error"] == "WriteInterrupted" for o in failed), failed
    assert len(failed) <= 1, failed
    assert ports_of(result["split_brain"]) == {new}, result["split_brain"]


def test_a_token_of_a_write_lost_in_the_failover_is_reported_and_reads_the_primary(
    moving_cluster: LocalCluster,
) -> None:
    """Async replication lost a write: its client is told apart, not served stale."""
    result = drill(moving_cluster, "--lost-write")
    assert result["timeline"] == 2
    assert result["on_new_primary"] == ["kept"]  # the write really was lost
    assert result["exact"] is True  # the history file was read (superuser)
    assert result["kept"]["pinned"] is None  # on the new timeline: a replica
    assert result["kept"]["alias"] != "default"
    assert result["gone"] == {"alias": "default", "pinned": "lost_write"}
    assert result["gone_again"] == result["gone"]
    (signal,) = result["signals"]  # once per write and process
    assert signal["timeline"] == 1 and signal["primary_timeline"] == 2
    assert signal["cluster"] == "default"
    if result["metrics"] is not None:
        assert result["metrics"] == 1


def test_one_address_that_moves_pgbouncer_in_front_of_the_primary(
    moving_cluster: LocalCluster,
) -> None:
    """
    The primary alias is one address (PgBouncer, as for an RDS writer endpoint
    or a virtual IP), re-pointed at the promoted node: writes follow it, and
    the write under way at the switch is a typed error (a 503), never replayed.
    """
    from tests.chaos.pgbouncer import PgBouncerMissing, start_bouncer

    primary = moving_cluster.node("primary")
    try:
        bouncer = start_bouncer(moving_cluster, "primary-address", primary.port, [])
    except PgBouncerMissing as error:
        pytest.fail(str(error))
    try:
        result = drill(
            moving_cluster,
            "--bouncer-port",
            str(bouncer.port),
            "--bouncer-dir",
            str(bouncer.log.parent),
        )
    finally:
        bouncer.stop()
    new = result["ports"]["replica1"]
    assert result["resumed_after"] is not None, result["switch"]
    assert result["resumed_after"] < RESUME_BOUND, result["switch"]
    failed = [o for o in result["switch"] if "error" in o]
    errors = {o["error"] for o in failed}
    assert errors <= {"PrimaryUnavailable", "WriteInterrupted"}, failed
    assert ports_of(result["split_brain"]) == {new}, result["split_brain"]
    assert ports_of(result["fresh_process"]) == {new}, result["fresh_process"]
    assert ports_of(result["after_rejoin"]) == {new}, result["after_rejoin"]
