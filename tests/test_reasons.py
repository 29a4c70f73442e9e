"""The Reason vocabulary shared by the policy, the tracker and the metrics."""

from __future__ import annotations

import pytest

from django_rwsplit.health.reasons import Reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("lag 7.20 s over 5 s", Reason.LAG),
        ("Unreachable: connection refused", Reason.UNREACHABLE),
        ("not in recovery (promoted?)", Reason.NOT_IN_RECOVERY),
        ("WAL receiver not streaming", Reason.NOT_STREAMING),
        ("connection failed: timeout", Reason.CONNECTION_FAILED),
        ("has not applied a visible commit (at 0/3000060)", Reason.NOT_VISIBLE),
        ("my own reason", Reason.OTHER),
        (None, Reason.OTHER),
    ],
)
def test_free_text_is_classified_by_its_prefix(text, reason):
    assert Reason.of_text(text) is reason


def test_only_failures_to_connect_count_as_unreachable():
    assert {r for r in Reason if r.unreachable} == {
        Reason.UNREACHABLE,
        Reason.CONNECTION_FAILED,
    }


def test_values_are_the_metric_labels():
    assert [r.value for r in Reason] == [
        "lag",
        "unreachable",
        "not_in_recovery",
        "not_streaming",
        "connection_failed",
        "not_visible",
        "other",
    ]
