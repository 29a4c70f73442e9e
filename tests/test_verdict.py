"""The primary's verdict (health.verdict): one rule for every reader."""

from __future__ import annotations

import pytest

from django_rwsplit.health.probes import FencedNode, PrimaryStatus, ProbeFailure
from django_rwsplit.health.tracker import HealthSnapshot
from django_rwsplit.health.verdict import PrimaryVerdict, judge_primary, primary_problem

TIMEOUT = ProbeFailure.TIMEOUT


def status(**values) -> PrimaryStatus:
    return PrimaryStatus(alias="default", endpoint="p", checked_at=1.0, **values)


@pytest.mark.parametrize(
    ("primary", "verdict", "problem"),
    [
        (status(reachable=True, in_recovery=False), PrimaryVerdict.WRITABLE, None),
        (
            status(reachable=True, in_recovery=True),
            PrimaryVerdict.IN_RECOVERY,
            "in recovery (read-only)",
        ),
        (
            status(
                reachable=False,
                error="timeout after 500 ms",
                failure=ProbeFailure.TIMEOUT,
            ),
            PrimaryVerdict.UNREACHABLE,
            "unreachable: timeout after 500 ms",
        ),
        (
            status(reachable=True, in_recovery=None),
            PrimaryVerdict.UNKNOWN,
            "role unknown (not reported)",
        ),
        (None, PrimaryVerdict.UNKNOWN, "not checked"),
    ],
)
def test_each_status_has_one_verdict_and_one_problem(primary, verdict, problem):
    assert judge_primary(primary) is verdict
    assert primary_problem(primary) == problem


@pytest.mark.parametrize(
    ("in_recovery", "expected"), [(False, "ok"), (True, "critical"), (None, "critical")]
)
def test_the_overall_status_follows_the_verdict(in_recovery, expected):
    snapshot = HealthSnapshot(
        primary=status(reachable=True, in_recovery=in_recovery), replicas=[]
    )
    assert snapshot.status == expected


# The primary on timeline 2, with the old one back, writable, on timeline 1.
SPLIT = status(
    reachable=True,
    in_recovery=False,
    node="10.0.0.2:5432",
    timeline=2,
    fenced=(FencedNode("10.0.0.1:5432", 1),),
)


def test_a_second_writable_node_is_critical_and_named():
    primary = SPLIT
    assert judge_primary(primary) is PrimaryVerdict.TWO_WRITABLE
    problem = primary_problem(primary)
    assert problem is not None and "two writable nodes" in problem
    assert "10.0.0.1:5432 (timeline 1)" in problem
    snapshot = HealthSnapshot(primary=primary, replicas=(), taken_at=1.0)
    assert snapshot.status == "critical"


def test_the_health_document_lists_fenced_nodes_as_records():
    primary = SPLIT
    snapshot = HealthSnapshot(primary=primary, replicas=(), taken_at=1.0)
    document = snapshot.as_dict(show_endpoints=True)
    assert document["primary"]["fenced"] == [{"node": "10.0.0.1:5432", "timeline": 1}]
    assert document["primary"]["two_writable_nodes"] is True
