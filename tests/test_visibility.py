"""
visible_on_replicas() on the real cluster: replicas that apply WAL late (in
rotation, within the lag bound), and the wait's bound when one cannot apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.test import override_settings

from django_rwsplit import signals, visible_on_replicas
from django_rwsplit.management.health_rounds import render_table
from django_rwsplit.testing.cluster import LocalCluster
from tests.testapp.models import Item
from tests.utils import fast_health, start_health

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

APPLY_DELAY_MS = 800
# Replicas 800 ms behind stay in rotation; the wait for them is bounded by 5 s.
SETTINGS = fast_health(MAX_LAG_SECONDS=30.0, VISIBLE_WAIT=5.0)
SHORT = fast_health(MAX_LAG_SECONDS=30.0, VISIBLE_WAIT=0.5)
REPLICAS = ("replica1", "replica2")


def has_item(cluster: LocalCluster, alias: str, column: str, value: object) -> bool:
    """Whether replica ``alias`` shows an item with ``column = value`` now."""
    return bool(
        cluster.execute(
            alias,
            f"SELECT count(*) FROM testapp_item WHERE {column} = %s",
            dbname=connections["default"].settings_dict["NAME"],
            params=[value],
        )[0][0]
    )


def on_each_replica(cluster: LocalCluster, item_id: int) -> dict[str, bool]:
    """Whether each replica shows the row now (asked directly, not routed)."""
    return {name: has_item(cluster, name, "id", item_id) for name in REPLICAS}


@pytest.fixture
def late_replicas(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """Both replicas apply WAL 800 ms late."""
    for name in REPLICAS:
        cluster.set_apply_delay(name, APPLY_DELAY_MS)
    try:
        yield cluster
    finally:
        for name in REPLICAS:
            cluster.set_apply_delay(name, 0)


@override_settings(RWSPLIT=SETTINGS)
def test_a_write_in_the_block_is_on_every_replica_when_it_returns(late_replicas):
    start_health()
    with visible_on_replicas():
        item = Item.objects.create(name="seen by all")
    assert on_each_replica(late_replicas, item.id) == dict.fromkeys(REPLICAS, True)


@override_settings(RWSPLIT=SETTINGS)
def test_without_the_block_replicas_that_apply_late_miss_it(late_replicas):
    """The control: the same write, read at once, is not on the replicas."""
    start_health()
    item = Item.objects.create(name="not yet")
    assert on_each_replica(late_replicas, item.id) == dict.fromkeys(REPLICAS, False)


@override_settings(RWSPLIT=SETTINGS)
@pytest.mark.parametrize("shape", ["block_around_atomic", "atomic_around_block"])
def test_a_transaction_waits_at_its_commit(late_replicas, shape):
    start_health()
    if shape == "block_around_atomic":
        with visible_on_replicas(), transaction.atomic():
            item = Item.objects.create(name="in a transaction")
            assert on_each_replica(late_replicas, item.id)["replica1"] is False
    else:
        with transaction.atomic():
            with visible_on_replicas():
                item = Item.objects.create(name="committed later")
            Item.objects.create(name="after the block, same transaction")
    assert on_each_replica(late_replicas, item.id) == dict.fromkeys(REPLICAS, True)


@override_settings(RWSPLIT=SETTINGS)
def test_a_rolled_back_transaction_does_not_wait(late_replicas):
    start_health()
    started = time.monotonic()
    with (
        pytest.raises(ZeroDivisionError),
        visible_on_replicas(),
        transaction.atomic(),
    ):
        Item.objects.create(name="rolled back")
        1 / 0  # noqa: B018
    Item.objects.create(name="outside, later")
    assert time.monotonic() - started < APPLY_DELAY_MS / 1000


@override_settings(RWSPLIT=SETTINGS)
def test_the_decorator_works_on_async_functions(late_replicas):
    start_health()

    @visible_on_replicas
    async def create() -> int:
        item = await Item.objects.acreate(name="async")
        return item.id

    async def create_then_close() -> int:
        try:
            return await create()
        finally:  # the executor thread's connection would outlive the test
            await sync_to_async(connections.close_all)()

    item_id = asyncio.run(create_then_close())
    assert on_each_replica(late_replicas, item_id) == dict.fromkeys(REPLICAS, True)


@override_settings(RWSPLIT=SHORT)
def test_a_replica_that_cannot_apply_is_held_out_until_it_has(cluster):
    """VISIBLE_WAIT ran out: the write stands, no failure, replica1 serves no read."""
    state = start_health()
    cluster.pause_replay("replica1")
    timed_out: list[dict[str, object]] = []

    def record(sender: object, **kwargs: object) -> None:
        timed_out.append(kwargs)

    signals.visibility_timed_out.connect(record)
    try:
        started = time.monotonic()
        with visible_on_replicas():
            item = Item.objects.create(name="replica1 paused")
        took = time.monotonic() - started
    finally:
        signals.visibility_timed_out.disconnect(record)
    # VISIBLE_WAIT + CHECK_INTERVAL + CHECK_TIMEOUT, with slack for a busy CI.
    assert took < 0.5 + 0.2 + 0.5 + 5.0
    assert Item.objects.using("default").filter(id=item.id).exists()
    (report,) = timed_out
    assert report["replicas"] == ("replica1",)
    assert "replica1" not in state.rotation.members
    for _ in range(20):  # rounds go on; replica1 stays out while paused
        state.monitor.run_round()
    assert "replica1" not in state.rotation.members
    cluster.resume_replay("replica1")
    cluster.wait_caught_up("replica1")
    deadline = time.monotonic() + 10
    while "replica1" not in state.rotation.members and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "replica1" in state.rotation.members


@override_settings(RWSPLIT=SHORT)
@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_a_dead_or_hung_replica_bounds_the_wait_and_fails_nothing(cluster, fault):
    start_health()
    if fault == "stopped":
        cluster.stop_replica("replica2")
    else:
        cluster.freeze("replica2")
    started = time.monotonic()
    with visible_on_replicas():
        item = Item.objects.create(name=f"replica2 {fault}")
    took = time.monotonic() - started
    assert took < 0.5 + 0.2 + 0.5 + 5.0
    assert Item.objects.using("default").filter(id=item.id).exists()


@pytest.fixture
def synchronous_replicas(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The primary names both replicas as synchronous standbys (FIRST 2)."""
    names = "FIRST 2 (replica1, replica2)"
    cluster.execute(
        "primary", f"ALTER SYSTEM SET synchronous_standby_names = '{names}'"
    )
    cluster.execute("primary", "SELECT pg_reload_conf()")
    try:
        deadline = time.monotonic() + 15
        sql = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
        while cluster.execute("primary", sql)[0][0] < 2:
            assert time.monotonic() < deadline, "the standbys never became sync"
            time.sleep(0.05)
        yield cluster
    finally:
        # Before anything else: a sync standby down would hang every commit.
        cluster.execute("primary", "ALTER SYSTEM RESET synchronous_standby_names")
        cluster.execute("primary", "SELECT pg_reload_conf()")


def waits_seen(
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[tuple[str, ...]], object] | None = None,
) -> list[tuple[str, ...]]:
    """The replicas each position wait of the engine asked (``before`` each)."""
    from django_rwsplit.backends.postgresql import visible_commits

    seen: list[tuple[str, ...]] = []
    real = visible_commits.wait_replayed

    def spy(lsn, aliases, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(tuple(aliases))
        if before is not None:
            before(tuple(aliases))
        return real(lsn, aliases, *args, **kwargs)

    monkeypatch.setattr(visible_commits, "wait_replayed", spy)
    return seen


@override_settings(RWSPLIT=SETTINGS)
@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "autocommit"])
def test_synchronous_standbys_are_reported_and_waited_for_by_postgresql(
    synchronous_replicas, late_replicas, monkeypatch, atomic
):
    state = start_health()
    state.monitor.run_round()
    assert state.primary is not None
    assert state.primary.sync_standbys == ("replica1", "replica2")
    assert {state.status(a).standby_name for a in REPLICAS} == set(REPLICAS)
    snapshot = state.snapshot()
    document = snapshot.as_dict()
    assert document["synchronous_replicas"] == list(REPLICAS)
    assert document["sync_covers_rotation"] is True
    assert (
        "synchronous replicas (remote_apply): replica1, replica2; "
        "cover the replicas in rotation: yes"
    ) in render_table(snapshot)
    name = "remote_apply" if atomic else "remote_apply, autocommit"
    # PostgreSQL waits (remote_apply). The commit's position is the primary's
    # WAL position just after it: WAL written meanwhile by others (a
    # checkpoint, a snapshot record) can still have a replica asked; it has
    # the row by then, when the apply delay alone would leave it without.
    found_when_asked: list[bool] = []
    waits = waits_seen(
        monkeypatch,
        before=lambda asked: found_when_asked.extend(
            has_item(late_replicas, alias, "name", name) for alias in asked
        ),
    )
    in_transaction = transaction.atomic() if atomic else contextlib.nullcontext()
    with visible_on_replicas(), in_transaction:
        item = Item.objects.create(name=name)
    assert on_each_replica(late_replicas, item.id) == dict.fromkeys(REPLICAS, True)
    assert all(found_when_asked), (
        "a replica was waited for by position, not by PostgreSQL"
    )
    assert len(waits) <= 1


@override_settings(RWSPLIT=SHORT)
def test_a_frozen_synchronous_standby_cancels_remote_apply_after_visible_wait(
    synchronous_replicas, monkeypatch
):
    state = start_health()
    # No round of the health thread may eject replica1 while the commit
    # waits (its check times out as VISIBLE_WAIT runs out): the engine alone
    # must find, from the positions, that replica1 lacks the commit.
    thread = state.monitor.thread
    assert thread is not None
    thread.stop()
    thread.join(5.0)
    assert not thread.is_alive()
    state.monitor.run_round()
    waits = waits_seen(monkeypatch)
    synchronous_replicas.freeze("replica1")
    started = time.monotonic()
    try:
        with visible_on_replicas(), transaction.atomic():
            item = Item.objects.create(name="sync standby frozen")
        took = time.monotonic() - started
        # Held out by the commit, no round running.
        held = "replica1" not in state.rotation.members
    finally:
        synchronous_replicas.execute(
            "primary", "ALTER SYSTEM RESET synchronous_standby_names"
        )
        synchronous_replicas.execute("primary", "SELECT pg_reload_conf()")
        synchronous_replicas.thaw("replica1")
    assert took < 0.5 + 0.5 + 0.2 + 0.5 + 5.0
    assert Item.objects.using("default").filter(id=item.id).exists()
    assert waits and "replica1" in waits[0]  # cancelled: the positions are asked
    assert held
