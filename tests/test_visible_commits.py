"""visible_on_replicas(): the block and the engine's pure logic, cluster-free."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from django_rwsplit import visibility, visible_on_replicas
from django_rwsplit.backends.postgresql import visible_commits
from django_rwsplit.health.reasons import Reason
from django_rwsplit.health.tracker import Tracker
from django_rwsplit.visibility import VisibleOnReplicas, wanted
from tests.test_tracker import CONFIG, primary, reading


def test_the_block_covers_every_cluster_or_the_one_named_and_nests():
    assert not wanted()
    with visible_on_replicas():
        assert wanted() and wanted("analytics")
        with VisibleOnReplicas("analytics"):
            assert wanted("analytics")
        assert wanted("analytics")
    assert not wanted()
    with VisibleOnReplicas("analytics"):
        assert wanted("analytics") and not wanted()
    assert not wanted("analytics")


def test_an_unknown_cluster_name_is_refused():
    with pytest.raises(ValueError, match="no cluster of that name"):
        visible_on_replicas("nowhere")


def test_a_block_in_one_task_is_not_seen_by_another():
    seen: dict[str, bool] = {}

    async def inside() -> None:
        with visible_on_replicas():
            await asyncio.sleep(0.01)
            seen["inside"] = wanted()

    async def outside() -> None:
        await asyncio.sleep(0.005)
        seen["outside"] = wanted()

    async def both() -> None:
        await asyncio.gather(inside(), outside())

    asyncio.run(both())
    assert seen == {"inside": True, "outside": False}


def test_the_block_ends_with_an_exception():
    with pytest.raises(KeyError), visible_on_replicas():
        raise KeyError("x")
    assert visibility._blocks.get() == ()


@pytest.mark.parametrize(
    ("sql", "one"),
    [
        ("INSERT INTO t VALUES (1)", True),
        ("  update t set a = 1;", True),
        ("/* c */ DELETE FROM t", True),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", True),
        ("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)", False),
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", False),
        ("VACUUM t", False),
        ("CREATE INDEX CONCURRENTLY i ON t (a)", False),
        ("SELECT nextval('s')", False),
    ],
)
def test_only_one_plain_dml_statement_is_put_in_a_transaction_of_its_own(sql, one):
    assert visible_commits._one_dml_statement(sql) is one


class FakeCursor:
    def __init__(self, row: tuple[str | None, ...]) -> None:
        self.row = row

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str) -> None:
        assert "pg_stat_replication" in sql

    def fetchone(self) -> tuple[str | None, ...]:
        return self.row


def wrapper_answering(*row: str | None) -> SimpleNamespace:
    connection = SimpleNamespace(cursor=lambda: FakeCursor(row), autocommit=True)
    return SimpleNamespace(connection=connection)


def test_the_primarys_view_of_what_each_standby_applied():
    found = visible_commits._position(
        wrapper_answering("0/3000100", "replica1=0/3000100,replica2=0/3000000")
    )
    assert found == (0x3000100, {"replica1": 0x3000100, "replica2": 0x3000000})


def test_a_name_two_standbys_share_tells_nothing():
    found = visible_commits._position(
        wrapper_answering("0/5", "walreceiver=0/5,walreceiver=0/1,replica1=0/5")
    )
    assert found == (5, {"replica1": 5})


def test_without_the_right_to_see_standbys_every_replica_is_asked():
    assert visible_commits._position(wrapper_answering("0/5", None)) == (5, {})


def test_a_held_replica_serves_no_read_until_a_round_finds_it_replayed():
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0, 100), [reading("r1", 0, 100), reading("r2", 0, 100)])
    assert tracker.rotation.members == {"r1", "r2"}
    transition = tracker.hold("r1", 150)
    assert transition is not None and transition.kind is Reason.NOT_VISIBLE
    assert tracker.rotation.members == {"r2"}
    at = 0.0
    for _ in range(5):  # behind the held position: out, however calm its lag
        at += 0.1
        tracker.apply(primary(at, 150), [reading("r1", at, 149)])
    assert tracker.rotation.members == {"r2"}
    assert "visible commit" in (tracker.status("r1").error or "")
    for _ in range(CONFIG.readmit_after):  # replayed: readmitted like any other
        at += 0.1
        tracker.apply(primary(at, 150), [reading("r1", at, 150)])
    assert tracker.rotation.members == {"r1", "r2"}


def test_holding_a_replica_already_out_keeps_it_out_until_it_replayed():
    tracker = Tracker(CONFIG)
    tracker.apply(primary(0, 100), [reading("r1", 0, 100)])
    tracker.hold("r2", 100)  # never checked: no transition, but a floor
    at = 0.0
    for _ in range(5):
        at += 0.1
        tracker.apply(primary(at, 100), [reading("r2", at, 99)])
    assert "r2" not in tracker.rotation.members
