"""Rotation policy on synthetic readings: pure logic, no server needed."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from django_rwsplit.conf import Config
from django_rwsplit.health.probes import PrimaryStatus, ReplicaReading
from django_rwsplit.health.tracker import Tracker

CONFIG = Config(
    replicas={"r1": 1, "r2": 1},
    max_lag_seconds=1.0,
    readmit_after=3,
    check_interval=0.1,
)


def primary(at: float, lsn: int, reachable: bool = True) -> PrimaryStatus:
    return PrimaryStatus(
        alias="default",
        endpoint="p:1",
        reachable=reachable,
        in_recovery=False if reachable else None,
        current_lsn=lsn if reachable else None,
        latency_ms=1.0,
        error=None if reachable else "down",
        checked_at=at,
    )


def reading(alias: str, at: float, replay: int, **changes: object) -> ReplicaReading:
    base = ReplicaReading(
        alias=alias,
        endpoint=f"{alias}:1",
        reachable=True,
        in_recovery=True,
        replay_paused=False,
        streaming=True,
        replay_lsn=replay,
        receive_lsn=replay,
        last_replay_at=at - 3600,
        server_time=at,
        latency_ms=1.0,
        error=None,
        checked_at=at + 0.001,
    )
    return replace(base, **changes)


def test_unknown_replicas_are_out_until_a_check_passes():
    tracker = Tracker(CONFIG)
    assert tracker.rotation.members == frozenset()
    snapshot = tracker.snapshot()
    assert [r.in_rotation for r in snapshot.replicas] == [False, False]
    tracker.apply(primary(0, 100), [reading("r1", 0, 100)])
    assert tracker.rotation.members == {"r1"}


def test_idle_primary_caught_up_replica_has_zero_lag_not_replay_age():
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0, 100), [reading("r1", 0, 100), reading("r2", 0, 100)])
    status = tracker.status("r1")
    assert status is not None
    assert status.lag_seconds == 0.0 and status.lag_bytes == 0
    assert tracker.snapshot().status == "ok"


def test_lag_seconds_come_from_primary_history():
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0.0, 100), [reading("r1", 0.0, 100), reading("r2", 0, 100)])
    tracker.apply(primary(0.5, 200), [reading("r1", 0.5, 100), reading("r2", 0.5, 200)])
    status = tracker.status("r1")
    assert status is not None and status.lag_bytes == 100
    assert status.lag_seconds == pytest.approx(0.501)
    assert status.in_rotation
    tracker.apply(primary(1.2, 300), [reading("r1", 1.2, 100), reading("r2", 1.2, 300)])
    assert tracker.rotation.members == {"r2"}
    assert tracker.snapshot().status == "warning"


def test_last_replayed_commit_tightens_lag_behind_a_busy_primary():
    """History alone says ~1 interval; the replica replayed a commit 20 ms ago."""
    config = replace(CONFIG, check_interval=1.0, max_lag_seconds=0.5)
    tracker = Tracker(config)
    tracker.apply(primary(0.0, 100), [reading("r1", 0.0, 100)])
    busy = replace(primary(1.0, 900), server_time=1.0)
    behind = reading("r1", 1.0, 500, last_replay_at=0.98, latency_ms=2.0)
    tracker.apply(busy, [behind])
    status = tracker.status("r1")
    assert status is not None and status.lag_bytes == 400
    # read by 1.001 + 0.002 s; commit at 0.98 s on a clock in step with ours.
    assert status.lag_seconds == pytest.approx(0.023)
    assert status.in_rotation


def test_commit_time_is_moved_onto_our_clock_by_the_primary_check():
    """A primary clock 100 s ahead (or behind) of ours changes nothing."""
    for skew in (100.0, -100.0):
        tracker = Tracker(CONFIG)
        tracker.apply(primary(0.0, 100), [reading("r1", 0.0, 100)])
        busy = replace(primary(1.0, 900), server_time=1.0 + skew)
        # The replica's own clock is skewed the other way: it is not used.
        behind = reading(
            "r1", 1.0, 500, last_replay_at=0.9 + skew, server_time=1.0 - skew
        )
        tracker.apply(busy, [behind])
        status = tracker.status("r1")
        assert status is not None
        assert status.lag_seconds == pytest.approx(0.102)


def test_history_wins_when_the_last_commit_is_older():
    """A long bulk load commits nothing: the history bound is the tighter one."""
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0.0, 100), [reading("r1", 0.0, 100)])
    busy = replace(primary(0.5, 900), server_time=0.5)
    tracker.apply(busy, [reading("r1", 0.5, 500, last_replay_at=-60.0)])
    status = tracker.status("r1")
    assert status is not None and status.lag_seconds == pytest.approx(0.501)


def test_without_history_or_primary_clock_the_replica_clock_is_used():
    """First round, primary clock unknown: time since the last replayed commit."""
    tracker = Tracker(CONFIG)
    tracker.apply(primary(10.0, 900), [reading("r1", 10.0, 500, last_replay_at=9.7)])
    status = tracker.status("r1")
    assert status is not None and status.lag_seconds == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"reachable": False, "error": "refused"}, "unreachable"),
        ({"in_recovery": False}, "not in recovery"),
        ({"replay_lsn": None}, "lag unknown"),
    ],
)
def test_failed_or_unknowable_checks_eject(changes, reason):
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0, 100), [reading("r1", 0, 100)])
    (transition,) = tracker.apply(primary(1, 100), [reading("r1", 1, 100, **changes)])
    assert not transition.admitted and reason in transition.reason
    assert "r1" not in tracker.rotation.members


def test_primary_unreachable_and_replica_behind_last_known_position_is_out():
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0, 100), [reading("r1", 0, 100), reading("r2", 0, 100)])
    tracker.apply(
        primary(1, 0, reachable=False), [reading("r1", 1, 90), reading("r2", 1, 100)]
    )
    assert tracker.rotation.members == {"r2"}
    assert tracker.snapshot().status == "critical"


def test_readmission_needs_consecutive_calm_checks():
    tracker = Tracker(CONFIG)
    t, lsn = 0.0, 100
    tracker.apply(primary(t, lsn), [reading("r1", t, lsn)])
    tracker.apply(primary(2.0, 200), [reading("r1", 2.0, 100)])
    assert "r1" not in tracker.rotation.members
    admitted_after = None
    for check in range(1, 6):
        t = 2.0 + check
        lsn = 200 + check
        transitions = tracker.apply(primary(t, lsn), [reading("r1", t, lsn)])
        if transitions:
            admitted_after = check
            break
    assert admitted_after == CONFIG.readmit_after


def test_threshold_hugging_replica_does_not_flap():
    """Lag hovering just under and over the bound ejects once, then stays out."""
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0, 0), [reading("r1", 0, 0)])
    transitions = []
    t = 0.0
    for step in range(1, 40):
        t += 0.1
        lag = 0.95 if step % 2 else 1.05
        # The replica has replayed what the primary had ``lag`` seconds ago.
        seen_lsn = int((t - lag) * 1000)
        transitions += tracker.apply(
            primary(t, int(t * 1000)), [reading("r1", t, seen_lsn)]
        )
    assert [tr.admitted for tr in transitions] == [False]


def test_passive_ejection_is_immediate_and_needs_readmission():
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0, 100), [reading("r1", 0, 100)])
    transition = tracker.eject("r1", "connection failed: refused")
    assert transition is not None and not transition.admitted
    assert tracker.eject("r1", "again") is None
    assert tracker.rotation.members == frozenset()
    assert tracker.apply(primary(1, 100), [reading("r1", 1, 100)]) == []


def test_max_lag_bytes_bound():
    tracker = Tracker(replace(CONFIG, max_lag_seconds=None, max_lag_bytes=50))
    tracker.apply(primary(0, 100), [reading("r1", 0, 100)])
    (transition,) = tracker.apply(primary(1, 200), [reading("r1", 1, 120)])
    assert "80 bytes" in transition.reason


def test_caught_up_replica_keeps_serving_when_the_primary_is_gone():
    """With no primary to stream from, 'not streaming' alone does not eject."""
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0, 100), [reading("r1", 0, 100), reading("r2", 0, 100)])
    tracker.apply(
        primary(1, 0, reachable=False),
        [reading("r1", 1, 100, streaming=False), reading("r2", 1, 90, streaming=False)],
    )
    assert tracker.rotation.members == {"r1"}


def test_not_streaming_and_behind_ejects_on_the_second_round():
    """One round can race a dying primary; two rounds behind cannot."""
    tracker = Tracker(replace(CONFIG, max_lag_seconds=None))
    tracker.apply(primary(0, 100), [reading("r1", 0, 100)])
    assert (
        tracker.apply(primary(1, 200), [reading("r1", 1, 150, streaming=False)]) == []
    )
    assert tracker.rotation.members == {"r1"}
    (transition,) = tracker.apply(
        primary(2, 300), [reading("r1", 2, 150, streaming=False)]
    )
    assert not transition.admitted and "not streaming" in transition.reason


def test_not_streaming_but_caught_up_stays():
    """A replica that replayed the primary's position is fresh, streaming or not."""
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0, 100), [reading("r1", 0, 100)])
    for t in (1, 2, 3):
        assert (
            tracker.apply(primary(t, 100), [reading("r1", t, 100, streaming=False)])
            == []
        )
    assert tracker.rotation.members == {"r1"}


def test_a_streaming_round_resets_the_count():
    tracker = Tracker(replace(CONFIG, max_lag_seconds=None))
    tracker.apply(primary(0, 100), [reading("r1", 0, 100)])
    tracker.apply(primary(1, 200), [reading("r1", 1, 150, streaming=False)])
    tracker.apply(primary(2, 250), [reading("r1", 2, 200)])
    assert (
        tracker.apply(primary(3, 300), [reading("r1", 3, 250, streaming=False)]) == []
    )
    assert tracker.rotation.members == {"r1"}


def test_a_first_admission_is_not_called_a_return(caplog):
    from django_rwsplit.health.registry import ProcessHealth

    tracker = Tracker(CONFIG)
    [first] = tracker.apply(primary(0, 100), [reading("r1", 0, 100)])
    assert first.admitted and first.first
    tracker.apply(primary(2.0, 200), [reading("r1", 2.0, 100)])  # lag 2 s: out
    again = []
    for check in range(1, 4):
        again += tracker.apply(primary(2 + check, 200), [reading("r1", 2 + check, 200)])
    [back] = again
    assert back.admitted and not back.first

    with caplog.at_level("INFO", logger="django_rwsplit"):
        quiet = SimpleNamespace(config=Config(), _of_cluster=lambda: "")
        ProcessHealth._announce(quiet, [first, back])  # type: ignore[arg-type]
    messages = [record.getMessage() for record in caplog.records]
    assert "Replica 'r1' in rotation." in messages
    assert "Replica 'r1' back in rotation." in messages
