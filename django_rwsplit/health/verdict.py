"""
The primary's verdict: one rule for whether the primary can take writes.

The monitor's log, the health document (endpoint, status page, command,
django-health-check), the overall status, the write guard and the database
check all judge a :class:`~django_rwsplit.health.probes.PrimaryStatus` here.
"""

from __future__ import annotations

from enum import StrEnum

from django_rwsplit.health.probes import PrimaryStatus

__all__ = ["PrimaryVerdict", "judge_primary", "primary_problem"]


class PrimaryVerdict(StrEnum):
    """What the last check says of the primary."""

    #: It answered and is not in recovery.
    WRITABLE = "writable"
    #: It answered in recovery: a standby (demoted, or not yet promoted).
    IN_RECOVERY = "in_recovery"
    #: It did not answer (refused, reset, timed out).
    UNREACHABLE = "unreachable"
    #: Not checked yet, or it answered without saying its role.
    UNKNOWN = "unknown"
    #: Writable, and another listed node accepts writes too (an old primary
    #: back on an older timeline): writes go to this one, the other is fenced.
    TWO_WRITABLE = "two_writable_nodes"


def judge_primary(status: PrimaryStatus | None) -> PrimaryVerdict:
    """Return the verdict on ``status`` (None: not checked yet)."""
    if status is None:
        return PrimaryVerdict.UNKNOWN
    if not status.reachable:
        return PrimaryVerdict.UNREACHABLE
    if status.in_recovery is None:
        return PrimaryVerdict.UNKNOWN
    if status.in_recovery:
        return PrimaryVerdict.IN_RECOVERY
    if status.fenced:
        return PrimaryVerdict.TWO_WRITABLE
    return PrimaryVerdict.WRITABLE


def primary_problem(status: PrimaryStatus | None) -> str | None:
    """Return what is wrong with the primary, or None when nothing is."""
    verdict = judge_primary(status)
    if verdict is PrimaryVerdict.WRITABLE:
        return None
    if verdict is PrimaryVerdict.IN_RECOVERY:
        return "in recovery (read-only)"
    if verdict is PrimaryVerdict.TWO_WRITABLE:
        assert status is not None
        return (
            f"one of two writable nodes: writes go to {status.node} (timeline "
            f"{status.timeline}); fenced, never written to: {status.fenced_text()}"
        )
    if verdict is PrimaryVerdict.UNREACHABLE:
        assert status is not None
        return f"unreachable: {status.error}"
    return "not checked" if status is None else "role unknown (not reported)"
