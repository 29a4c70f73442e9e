"""health.policy: one reading, its lag and its verdict (pure logic)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from django_rwsplit.conf import Config
from django_rwsplit.health.policy import PrimaryHistory, assess
from django_rwsplit.health.probes import PrimaryStatus, ProbeFailure, ReplicaReading
from django_rwsplit.health.reasons import Reason

CONFIG = Config(replicas={"replica1": 1}, max_lag_seconds=5.0, max_lag_bytes=None)
NOW = 1000.0
PRIMARY = PrimaryStatus(
    alias="default",
    endpoint="p",
    reachable=True,
    checked_at=NOW,
    in_recovery=False,
    current_lsn=1000,
    server_time=NOW,
)
CAUGHT_UP = ReplicaReading(
    alias="replica1",
    endpoint="r1",
    reachable=True,
    checked_at=NOW,
    in_recovery=True,
    replay_paused=False,
    streaming=True,
    replay_lsn=1000,
    receive_lsn=1000,
    last_replay_at=NOW - 1,
    server_time=NOW,
)


def history(*samples: tuple[float, int]) -> PrimaryHistory:
    kept = PrimaryHistory()
    for at, lsn in samples:
        kept.add(at, lsn)
    return kept


def test_a_caught_up_replica_has_no_lag_however_idle_the_primary():
    found = assess(CAUGHT_UP, PRIMARY, history((NOW - 3600, 1000)), CONFIG)
    assert (found.lag_bytes, found.lag_seconds, found.problem) == (0, 0.0, None)


def test_lag_in_seconds_is_the_tighter_bound():
    behind = replace(CAUGHT_UP, replay_lsn=900, last_replay_at=NOW - 2.0)
    # The primary was last at or before 900 ten seconds ago; the last replayed
    # commit is 2 s old: every record not replayed is younger than that.
    found = assess(behind, PRIMARY, history((NOW - 10, 900), (NOW, 1000)), CONFIG)
    assert found.lag_bytes == 100
    assert found.lag_seconds == pytest.approx(2.0)
    assert found.problem is None


def test_lag_over_the_bound_leaves_rotation():
    behind = replace(CAUGHT_UP, replay_lsn=900, last_replay_at=NOW - 8.0)
    found = assess(behind, PRIMARY, history((NOW - 10, 900)), CONFIG)
    assert found.reason is Reason.LAG
    assert found.problem == "lag 8.00 s over 5 s"


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (
            replace(
                CAUGHT_UP,
                reachable=False,
                error="timeout after 500 ms",
                failure=ProbeFailure.TIMEOUT,
            ),
            Reason.UNREACHABLE,
        ),
        (replace(CAUGHT_UP, in_recovery=False), Reason.NOT_IN_RECOVERY),
        (replace(CAUGHT_UP, replay_lsn=None), Reason.LAG),
    ],
)
def test_what_keeps_a_replica_out(reading, reason):
    assert assess(reading, PRIMARY, history(), CONFIG).reason is reason


def test_with_the_primary_unreachable_a_replica_behind_its_last_position_is_out():
    down = replace(PRIMARY, reachable=False, current_lsn=None)
    behind = replace(CAUGHT_UP, replay_lsn=900, receive_lsn=900)
    assert assess(behind, down, history((NOW - 1, 1000)), CONFIG).problem == (
        "lag unknown: primary unreachable"
    )
    at_it = assess(CAUGHT_UP, down, history((NOW - 1, 1000)), CONFIG)
    assert at_it.problem is None and at_it.lag_bytes == 0


def test_a_behind_replica_not_streaming_leaves_on_the_second_round_only():
    behind = replace(CAUGHT_UP, replay_lsn=990, streaming=False)
    first = assess(behind, PRIMARY, history((NOW - 1, 990)), CONFIG)
    second = assess(
        behind, PRIMARY, history((NOW - 1, 990)), CONFIG, behind_unstreamed_before=True
    )
    assert first.problem is None
    assert second.reason is Reason.NOT_STREAMING
