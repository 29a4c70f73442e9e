"""The rotation and its order: pure logic, no server needed."""

from __future__ import annotations

from collections import Counter

from django_rwsplit.conf import Config
from django_rwsplit.health.probes import PrimaryStatus, ReplicaReading
from django_rwsplit.health.rotation import Rotation, smooth_weighted_sequence
from django_rwsplit.health.tracker import Tracker


def test_smooth_weighted_order_interleaves():
    assert smooth_weighted_sequence({"a": 3, "b": 1}) == ["a", "a", "b", "a"]


def test_candidates_hold_every_member_once_whatever_the_weights():
    rotation = Rotation({"r1": 3, "r2": 1})
    for _ in range(8):
        candidates = rotation.candidates()
        assert sorted(candidates) == ["r1", "r2"]


def test_candidates_start_at_the_next_pick():
    rotation = Rotation({"r1": 1, "r2": 1})
    firsts = Counter(rotation.candidates()[0] for _ in range(10))
    assert firsts == {"r1": 5, "r2": 5}


def test_empty_rotation():
    rotation = Rotation({})
    assert rotation.pick() is None
    assert rotation.candidates() == []


def _round(tracker: Tracker, at: float) -> None:
    primary = PrimaryStatus(
        alias="default",
        endpoint="p:1",
        reachable=True,
        in_recovery=False,
        current_lsn=100,
        latency_ms=1.0,
        error=None,
        checked_at=at,
    )
    readings = [
        ReplicaReading(
            alias=alias,
            endpoint=f"{alias}:1",
            reachable=True,
            in_recovery=True,
            replay_paused=False,
            streaming=True,
            replay_lsn=100,
            receive_lsn=100,
            last_replay_at=at,
            server_time=at,
            latency_ms=1.0,
            error=None,
            checked_at=at,
        )
        for alias in ("r1", "r2")
    ]
    tracker.apply(primary, readings)


def test_one_read_per_round_still_spreads_over_the_replicas():
    """The cycle is kept across rounds: it no longer restarts at replica1."""
    tracker = Tracker(Config(replicas={"r1": 1, "r2": 1}))
    served = Counter()
    for at in range(40):
        _round(tracker, float(at))
        served[tracker.rotation.pick()] += 1
    assert served == {"r1": 20, "r2": 20}
