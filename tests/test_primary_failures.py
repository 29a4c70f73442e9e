"""The primary down or demoted: writes fail with a clear error, reads go on."""

from __future__ import annotations

import pytest
from django.db import connections, router
from django.test import override_settings

from django_rwsplit import conf
from django_rwsplit.exceptions import PrimaryUnavailable
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.probes import probe_for
from tests.testapp.models import Item
from tests.utils import fast_health, server_port, start_health, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

FAST = fast_health(READMIT_AFTER=3)


@override_settings(RWSPLIT=FAST)
def test_primary_down_writes_fail_naming_it_and_reads_continue(cluster, ports, caplog):
    state = start_health()
    cluster.stop_primary()
    connections.close_all()
    with pytest.raises(PrimaryUnavailable, match="'default'.*unreachable"):
        Item.objects.create(name="nowhere")
    # Replicas were caught up with the last primary position: still serving.
    wait_until(lambda: not state.tracker.primary.reachable, timeout=5)
    assert health_registry.snapshot().status == "critical"
    rounds = state.monitor.rounds
    wait_until(lambda: state.monitor.rounds >= rounds + 3, timeout=10)
    logged = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(logged) == 1, "the primary's failure is logged once, not per round"
    connections.close_all()
    assert server_port(router.db_for_read(Item)) in (
        ports["replica1"],
        ports["replica2"],
    )


@override_settings(RWSPLIT={**FAST, "PRIMARY": "demoted", "REPLICAS": ["replica2"]})
def test_demoted_primary_refuses_writes_with_a_clear_error(cluster):
    router.db_for_read(Item)
    state = health_registry.process_health(conf.get_config())
    wait_until(lambda: state.tracker.primary is not None, timeout=5)
    assert state.tracker.primary.in_recovery is True
    connections["demoted"].close()
    with pytest.raises(PrimaryUnavailable, match="'demoted'.*in recovery"):
        Item.objects.create(name="to-a-replica")
    assert health_registry.snapshot().status == "critical"


@override_settings(RWSPLIT=fast_health(CHECK_INTERVAL=60.0, MAX_LAG_SECONDS=60.0))
def test_replicas_stay_when_the_primary_dies_between_its_check_and_theirs(cluster):
    """
    The chaos suite's flake, made deterministic: a round reads the primary up,
    the primary dies, then the same round reads the replicas, whose WAL
    receivers have stopped. They hold everything the primary had; ejecting
    them for "not streaming" sent every read to the dead primary.
    """
    state = start_health()
    Item.objects.create(name="last write before the primary dies")
    cluster.wait_caught_up(timeout=30)
    primary_settings = connections.settings["default"]
    probe = probe_for(primary_settings)
    primary = probe.check_primary("default", primary_settings, 2.0)
    assert primary.reachable
    cluster.stop_primary()

    def readings():
        return [
            probe.check_replica(alias, connections.settings[alias], 2.0)
            for alias in ("replica1", "replica2")
        ]

    wait_until(lambda: not any(r.streaming for r in readings()), timeout=30)
    state.tracker.apply(primary, readings())
    connections.close_all()

    assert state.rotation.members == {"replica1", "replica2"}, [
        (s.alias, s.error) for s in state.tracker.snapshot().replicas
    ]


def _replica_scalar(cluster, replica: str, sql: str):
    return cluster.execute(replica, sql)[0][0]


@pytest.mark.parametrize("fault", ["replay paused", "apply delay"])
@override_settings(RWSPLIT=fast_health(CHECK_INTERVAL=60.0, MAX_LAG_SECONDS=1.0))
def test_a_replica_known_behind_stays_out_while_the_primary_is_unreachable(
    cluster, fault
):
    """
    The last round saw the primary before a write that replica1 received but
    did not replay; then the primary died. Measured against the primary's
    last known position, replica1 showed lag 0 and served stale reads.
    """
    state = start_health()  # one round: the primary before the write
    if fault == "replay paused":
        cluster.pause_replay("replica1")
    else:
        cluster.set_apply_delay("replica1", 60_000)
    Item.objects.create(name="received, not replayed")
    (written,) = cluster.execute("primary", "SELECT pg_current_wal_lsn()::text")[0]
    wait_until(
        lambda: _replica_scalar(
            cluster, "replica1", f"SELECT pg_last_wal_receive_lsn() >= '{written}'"
        ),
        timeout=10,
    )
    cluster.wait_caught_up("replica2", timeout=30)
    cluster.stop_primary()
    try:
        # replica2 drains what it received (the shutdown checkpoint) at once.
        drained = "SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
        wait_until(lambda: _replica_scalar(cluster, "replica2", drained), timeout=10)
        for _ in range(2):  # held WAL must be seen twice (replay may just lag)
            state.monitor.run_round()
        assert not state.tracker.primary.reachable
        assert state.rotation.members == {"replica2"}
        replica1 = state.status("replica1")
        assert replica1 is not None and not replica1.in_rotation
        assert "primary unreachable" in (replica1.error or "")
    finally:
        # A standby whose replay is held does not reconnect to the primary.
        cluster.set_apply_delay("replica1", 0)
        cluster.resume_replay("replica1")
        cluster.start_primary()  # before the test database is flushed
        connections.close_all()  # sessions the stop terminated
