"""Rounds shared through HEALTH_CACHE (health.shared): encoding, pure logic."""

from __future__ import annotations

import json
from dataclasses import asdict

from django_rwsplit.health.probes import (
    FencedNode,
    PrimaryStatus,
    ProbeFailure,
    ReplicaReading,
)
from django_rwsplit.health.shared import decode_round

PRIMARY = PrimaryStatus(
    alias="default", endpoint="p", reachable=True, checked_at=1.0, current_lsn=10
)
HUNG = ReplicaReading(
    alias="replica1",
    endpoint="r1",
    reachable=False,
    checked_at=1.0,
    error="timeout after 500 ms",
    failure=ProbeFailure.TIMEOUT,
)


def through_the_cache(primary, readings) -> dict:
    """What another process reads back: JSON, as the cache stores it."""
    payload = {"primary": asdict(primary), "replicas": [asdict(r) for r in readings]}
    return json.loads(json.dumps(payload))


def test_a_probe_failure_stays_typed_across_processes():
    primary, (hung,) = decode_round(through_the_cache(PRIMARY, [HUNG]))
    assert primary == PRIMARY
    assert hung.failure is ProbeFailure.TIMEOUT
    assert hung == HUNG


def test_a_round_from_an_older_process_has_no_failure_kind():
    payload = through_the_cache(PRIMARY, [HUNG])
    del payload["replicas"][0]["failure"]
    _, (hung,) = decode_round(payload)
    assert hung.failure is None
    assert hung.error == "timeout after 500 ms"


def test_fenced_nodes_stay_typed_across_processes():
    split = PrimaryStatus(
        alias="default",
        endpoint="p",
        reachable=True,
        checked_at=1.0,
        in_recovery=False,
        node="10.0.0.2:5432",
        timeline=2,
        fenced=(FencedNode("10.0.0.1:5432", 1),),
    )
    primary, _ = decode_round(through_the_cache(split, []))
    assert primary == split
    assert primary.fenced[0].timeline == 1
    assert primary.fenced_text() == "10.0.0.1:5432 (timeline 1)"
