"""The pin reasons: typed names whose values are the labels metrics show."""

from __future__ import annotations

from django_rwsplit import pinning
from django_rwsplit.pin_reasons import PinReason


def test_the_labels_stay_what_metrics_and_the_status_page_show():
    assert sorted(reason.value for reason in PinReason) == [
        "cookie",
        "fallback",
        "lost_write",
        "no_replicas",
        "pin_primary",
        "task_primary",
        "test_mirror",
        "token",
        "transaction",
        "unsafe_method",
        "write",
    ]


def test_a_reason_is_its_label():
    assert PinReason.WRITE == "write"
    assert f"{PinReason.UNSAFE_METHOD}" == "unsafe_method"


def test_a_shared_pin_reaches_every_cluster_of_the_unit_of_work():
    scope = pinning.Scope()
    other = scope.of("analytics")
    scope.pin_everywhere(PinReason.UNSAFE_METHOD)
    assert scope.pinned is PinReason.UNSAFE_METHOD
    assert other.pinned is PinReason.UNSAFE_METHOD
    assert scope.of("reports").pinned is PinReason.UNSAFE_METHOD
