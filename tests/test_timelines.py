"""health.timelines and lost_writes: which writes the primary's timeline holds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from django_rwsplit import consistency, pinning, signals
from django_rwsplit.conf import Config
from django_rwsplit.health import lost_writes, registry
from django_rwsplit.health.timelines import Lineage, history_sql, parse_history
from django_rwsplit.pin_reasons import PinReason

HISTORY = "1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tswitchover\n"


def test_a_history_file_gives_each_ancestors_switch_point():
    assert parse_history(HISTORY) == {1: 0x3000060, 2: 0x5000000}
    assert parse_history("") == {}
    assert history_sql(11) == "SELECT pg_read_file('pg_wal/0000000B.history')"


def test_a_write_past_its_timelines_switch_point_is_lost():
    lineage = Lineage()
    lineage.moved(3, parse_history(HISTORY), None)
    assert lineage.exact
    assert lineage.lost(1, 0x3000060) is None  # at the switch point: kept
    assert lineage.lost(1, 0x3000061) == 0x3000060
    assert lineage.lost(2, 0x4000000) is None
    assert lineage.lost(2, 0x5000001) == 0x5000000
    assert lineage.lost(3, 0x9000000) is None  # the primary's own timeline
    assert lineage.lost(4, 0x1) is None  # newer than this process knows


def test_without_the_history_the_new_primarys_first_position_stands_in():
    lineage = Lineage()
    lineage.moved(1, None, 0x1000000)
    lineage.moved(2, None, 0x3000000)  # history unreadable: a lower bound kept
    assert not lineage.exact
    assert lineage.lost(1, 0x3000000) is None
    assert lineage.lost(1, 0x3000001) == 0x3000000


def test_each_lost_write_is_reported_once():
    lineage = Lineage()
    assert lineage.first_report(1, 5)
    assert not lineage.first_report(1, 5)
    assert lineage.first_report(1, 6)


@pytest.fixture
def failed_over(monkeypatch: pytest.MonkeyPatch) -> Lineage:
    lineage = Lineage()
    lineage.moved(2, {1: 0x3000000}, None)
    state = SimpleNamespace(lineage=lineage)
    monkeypatch.setattr(registry, "current_of", lambda cluster: state)
    return lineage


def test_a_token_of_a_lost_write_reads_the_primary_and_is_reported(failed_over):
    sent: list[dict[str, object]] = []

    def receiver(sender: object, **kwargs: object) -> None:
        sent.append(kwargs)

    signals.write_lost.connect(receiver)
    try:
        token = consistency.Token(0x3000100, 1.0, None, {"default": 1})
        scope = pinning.Scope()
        consistency.apply(token, scope, Config())
        assert scope.pinned is PinReason.LOST_WRITE and scope.min_lsn is None
        kept = consistency.Token(0x2000000, 1.0, None, {"default": 1})
        assert consistency.scope_after(kept).min_lsn == 0x2000000
        assert consistency.scope_after(token).pinned is PinReason.LOST_WRITE
    finally:
        signals.write_lost.disconnect(receiver)
    (report,) = sent
    assert report["timeline"] == 1 and report["switch_point"] == 0x3000000


def test_a_token_without_a_timeline_is_judged_as_before(failed_over):
    scope = pinning.Scope()
    consistency.apply(consistency.Token(0x3000100, 1.0), scope, Config())
    assert scope.pinned is None and scope.min_lsn == 0x3000100


def test_no_health_state_no_judgement(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(registry, "current_of", lambda cluster: None)
    assert not lost_writes.check("default", 1, 10)
