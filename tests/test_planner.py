"""
The read planner on a fake health view: every routing rule, no server needed.

Unpinned reads, reads after writes, tokens and failover substitutes are
planned here in milliseconds; the real-cluster tests (test_routing,
test_consistency, test_retry...) keep proving the same rules end to end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import User

from django_rwsplit import conf, pin_primary, pinning, planner
from django_rwsplit.conf import Config
from django_rwsplit.exceptions import NoReplicaAvailable
from django_rwsplit.health import load
from django_rwsplit.health.rotation import Rotation
from django_rwsplit.pin_reasons import PinReason
from django_rwsplit.planner import ReadPlan, ReadPlanner
from django_rwsplit.routers import ReadWriteRouter

TWO = {"replica1": 1, "replica2": 1}


class FakeHealth:
    """A health view: the rotation, replay positions, the primary's position."""

    def __init__(
        self,
        weights: dict[str, int],
        replayed: dict[str, int] | None = None,
        primary_lsn: int | None = None,
    ) -> None:
        self.rotation = Rotation(weights)
        self.replayed = dict(replayed or {})
        self.primary = SimpleNamespace(current_lsn=primary_lsn)

    def status(self, alias: str) -> Any:
        return SimpleNamespace(replay_lsn=self.replayed.get(alias))

    def await_first_round(self) -> bool:
        return False


class FakePositions:
    """What servers answer when asked directly (read-your-writes)."""

    def __init__(self, replicas: dict[str, int | None], primary: int | None) -> None:
        self.replicas = replicas
        self.primary = primary
        self.asked: list[str] = []

    def replica_position(self, alias: str) -> int | None:
        self.asked.append(alias)
        return self.replicas.get(alias)

    def primary_position(self, using: str) -> int | None:
        self.asked.append(using)
        return self.primary


class FakePrimary:
    """The primary's DatabaseWrapper, as far as the planner looks at it."""

    def __init__(self, atomic_blocks: int = 0) -> None:
        self.atomic_blocks = [object()] * atomic_blocks

    @property
    def in_atomic_block(self) -> bool:
        return bool(self.atomic_blocks)


def make(
    config: Config | None = None,
    health: FakeHealth | None = None,
    positions: FakePositions | None = None,
    primary: FakePrimary | None = None,
) -> ReadPlanner:
    config = config or Config(replicas=TWO)
    view = health or FakeHealth(dict(config.replicas))
    wrapper = primary or FakePrimary()
    return ReadPlanner(
        config,
        health=lambda _config: view,
        positions=positions or FakePositions({}, None),
        primary_wrapper=lambda _alias: wrapper,  # type: ignore[arg-type,return-value]
    )


@pytest.fixture(autouse=True)
def quiet_context() -> Iterator[None]:
    """No write outside a scope, no replica penalised by earlier load."""
    pinning.forget_unscoped_write()
    load.reset()
    yield
    pinning.forget_unscoped_write()
    load.reset()


# -- unpinned reads -----------------------------------------------------------


def test_an_unpinned_read_goes_to_a_replica_in_rotation():
    reader = make()
    plans = {reader.plan() for _ in range(4)}
    assert plans == {
        ReadPlan("replica1", None, "default"),
        ReadPlan("replica2", None, "default"),
    }


def test_a_scope_keeps_its_first_replica_while_it_is_in_rotation():
    health = FakeHealth(TWO)
    reader = make(health=health)
    with pinning.scoped(pinning.Scope()):
        first = reader.plan().alias
        assert {reader.plan().alias for _ in range(6)} == {first}
        health.rotation = Rotation({a: 1 for a in TWO if a != first})
        (other,) = {reader.plan().alias for _ in range(6)}
        assert other != first


def test_no_replica_in_rotation_reads_the_primary_or_raises():
    health = FakeHealth({})
    assert make(health=health).plan() == ReadPlan(
        "default", PinReason.FALLBACK, "default"
    )
    strict = make(Config(replicas=TWO, fallback="error"), health=health)
    with pytest.raises(NoReplicaAvailable):
        strict.plan()


class StartingHealth(FakeHealth):
    """A server's health whose first round ends while the first read waits."""

    def __init__(self) -> None:
        super().__init__({})
        self.waits = 0

    def await_first_round(self) -> bool:
        self.waits += 1
        if self.waits > 1:
            return False
        self.rotation = Rotation(TWO)
        return True


def test_a_read_before_the_first_round_waits_for_it_not_the_primary():
    health = StartingHealth()
    strict = make(Config(replicas=TWO, fallback="error"), health=health)
    assert strict.plan().alias in TWO
    assert health.waits == 1
    health.rotation = Rotation({})
    with pytest.raises(NoReplicaAvailable):  # waited once: no second wait
        strict.plan()


def test_a_cluster_without_replicas_reads_its_primary():
    assert make(Config()).plan().reason is PinReason.NO_REPLICAS


# -- pins -----------------------------------------------------------------


def test_a_write_in_the_scope_pins_its_reads():
    reader = make()
    with pinning.scoped(pinning.Scope()):
        assert reader.plan().reason is None
        pinning.note_write()
        assert reader.plan() == ReadPlan("default", PinReason.WRITE, "default")


def test_outside_a_scope_a_write_pins_for_sticky_seconds(monkeypatch):
    reader = make(Config(replicas=TWO, sticky_seconds=5.0))
    pinning.note_write()
    assert reader.plan().reason is PinReason.WRITE
    later = time.monotonic() + 6
    monkeypatch.setattr(planner.time, "monotonic", lambda: later)
    assert reader.plan().reason is None


def test_pin_primary_pins_every_cluster_or_the_one_named():
    default = make()
    analytics = make(
        Config(replicas={"a1": 1}, name="analytics", is_default=False),
    )
    with pin_primary():
        assert default.plan().reason is PinReason.PIN_PRIMARY
        assert analytics.plan().reason is PinReason.PIN_PRIMARY
    with pinning.PinPrimary("analytics"):  # no such cluster in the settings
        assert default.plan().reason is None
        assert analytics.plan().reason is PinReason.PIN_PRIMARY


def test_a_pin_of_the_default_cluster_by_name_pins_it():
    with pin_primary("default"):
        assert make().plan().reason is PinReason.PIN_PRIMARY


def test_a_transaction_on_the_primary_pins_its_reads():
    reader = make(primary=FakePrimary(atomic_blocks=1))
    assert reader.plan().reason is PinReason.TRANSACTION


def test_the_requests_own_atomic_block_does_not_pin_until_a_write():
    reader = make(primary=FakePrimary(atomic_blocks=1))
    scope = pinning.Scope()
    scope.request_atomic_depth = 1  # ATOMIC_REQUESTS' transaction
    with pinning.scoped(scope):
        assert reader.plan().reason is None
        pinning.note_write()
        assert reader.plan().reason is PinReason.WRITE


def test_a_nested_atomic_block_in_the_request_pins():
    reader = make(primary=FakePrimary(atomic_blocks=2))
    scope = pinning.Scope()
    scope.request_atomic_depth = 1
    with pinning.scoped(scope):
        assert reader.plan().reason is PinReason.TRANSACTION


def test_a_users_pin_found_at_the_first_read_pins_the_read():
    reader = make()
    scope = pinning.Scope()

    def hook(unit: pinning.Scope) -> bool:
        unit.pinned = PinReason.WRITE
        return True

    scope.before_first_read = hook
    with pinning.scoped(scope):
        assert reader.plan().reason is PinReason.WRITE
        assert scope.before_first_read is None


def test_another_clusters_write_does_not_pin_this_one():
    analytics = make(Config(replicas={"a1": 1}, name="analytics", is_default=False))
    default = make()
    with pinning.scoped(pinning.Scope()):
        pinning.note_write("analytics")
        assert analytics.plan().reason is PinReason.WRITE
        assert default.plan().reason is None


# -- read-your-writes tokens ---------------------------------------------------


def test_a_token_reads_a_replica_that_has_replayed_it():
    health = FakeHealth(TWO, replayed={"replica1": 10, "replica2": 90}, primary_lsn=90)
    reader = make(health=health)
    with pinning.scoped(pinning.Scope(min_lsn=50)):
        assert {reader.plan().alias for _ in range(4)} == {"replica2"}


def test_a_token_no_replica_has_replayed_pins_the_scope():
    health = FakeHealth(TWO, replayed={"replica1": 10, "replica2": 10}, primary_lsn=90)
    positions = FakePositions({"replica1": 10, "replica2": 10}, 90)
    reader = make(health=health, positions=positions)
    scope = pinning.Scope(min_lsn=50)
    with pinning.scoped(scope):
        assert reader.plan() == ReadPlan("default", PinReason.TOKEN, "default")
    assert scope.pinned is PinReason.TOKEN


def test_a_replica_is_asked_when_the_health_view_is_older_than_the_write():
    health = FakeHealth(TWO, replayed={"replica1": 10, "replica2": 10}, primary_lsn=20)
    positions = FakePositions({"replica1": 60, "replica2": 10}, 90)
    reader = make(health=health, positions=positions)
    with pinning.scoped(pinning.Scope(min_lsn=50)):
        assert reader.plan().alias == "replica1"
    assert "replica1" in positions.asked


def test_a_token_from_the_future_is_ignored():
    health = FakeHealth(TWO, replayed={"replica1": 10, "replica2": 10}, primary_lsn=20)
    positions = FakePositions({"replica1": 10, "replica2": 10}, 30)
    reader = make(health=health, positions=positions)
    scope = pinning.Scope(min_lsn=10_000)
    with pinning.scoped(scope):
        assert reader.plan().reason is None
    assert scope.min_lsn is None and scope.pinned is None


class FakeClock:
    """time.monotonic()/sleep() for the planner: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_causal_wait_is_one_deadline_per_scope(monkeypatch):
    """With two replicas behind, CAUSAL_WAIT=300 waited 300 ms for each."""
    positions = FakePositions({"replica1": 10, "replica2": 10}, 90)
    reader = make(
        Config(replicas=TWO, causal_wait=300),
        health=FakeHealth(TWO, replayed={"replica1": 10, "replica2": 10}),
        positions=positions,
    )
    clock = FakeClock()
    monkeypatch.setattr(planner, "time", clock)
    scope = pinning.Scope(min_lsn=50)
    started = clock.now
    for alias in ("replica1", "replica2"):
        assert not reader.caught_up(alias, scope, ask=True)
    assert clock.now - started <= 0.300 + 0.005
    assert {"replica1", "replica2"} <= set(positions.asked)


def test_caught_up_without_asking_uses_the_health_view_only():
    reader = make(health=FakeHealth({"replica1": 1}, replayed={"replica1": 40}))
    assert reader.caught_up("replica1", pinning.Scope(min_lsn=40), ask=False)
    assert not reader.caught_up("replica1", pinning.Scope(min_lsn=41), ask=False)
    assert reader.caught_up("replica1", None, ask=False)


# -- substitutes (the engine's failover) -------------------------------------


def test_a_substitute_has_the_scopes_position_whatever_the_weights():
    """Weights 3:1 used to try replica1 twice and never replica2."""
    weights = {"replica1": 3, "replica2": 1}
    health = FakeHealth(weights, replayed={"replica1": 10, "replica2": 99})
    reader = make(Config(replicas=weights), health=health)
    with pinning.scoped(pinning.Scope(min_lsn=50)):
        for _ in range(4):
            assert reader.substitutes() == ["replica2", "default"]


def test_a_substitute_is_never_an_excluded_replica():
    reader = make(health=FakeHealth(TWO, replayed={"replica1": 99, "replica2": 99}))
    for _ in range(4):
        assert reader.substitute(exclude={"replica1"}) == "replica2"


def test_no_replica_at_the_position_means_the_primary():
    reader = make(health=FakeHealth({"replica1": 1}, replayed={"replica1": 10}))
    with pinning.scoped(pinning.Scope(min_lsn=50)):
        assert reader.substitutes() == ["default"]


def test_without_a_position_substitutes_spread_over_the_replicas():
    reader = make()
    assert {reader.substitute() for _ in range(4)} == {"replica1", "replica2"}


def test_a_named_clusters_substitutes_use_its_own_scope():
    config = Config(replicas={"a1": 1, "a2": 1}, name="analytics", is_default=False)
    health = FakeHealth({"a1": 1, "a2": 1}, replayed={"a1": 10, "a2": 99})
    reader = make(config, health=health)
    unit = pinning.Scope()
    unit.of("analytics").min_lsn = 50
    with pinning.scoped(unit):
        assert reader.substitutes() == ["a2", "default"]


# -- the router asks the planner ---------------------------------------------


def test_the_router_returns_the_plans_alias():
    config = conf.get_config()
    fake = make(config, health=FakeHealth({"replica2": 1}))
    kept = config.read_planner
    object.__setattr__(config, "read_planner", fake)
    try:
        router = ReadWriteRouter()
        assert router.db_for_read(User) == "replica2"
        with pin_primary():
            assert router.db_for_read(User) == config.primary
    finally:
        object.__setattr__(config, "read_planner", kept)


def test_a_planner_is_made_once_per_config_and_refetches_health_after_reset():
    older = planner.for_config(Config(replicas=TWO))
    config = Config(replicas=TWO)
    first = planner.for_config(config)
    assert planner.for_config(config) is first
    assert first is not older
    views = iter([FakeHealth({"replica1": 1}), FakeHealth({"replica2": 1})])
    first._health = lambda _config: next(views)
    first.forget_health()
    assert first.health.rotation.members == {"replica1"}
    planner.reset()
    assert first.health.rotation.members == {"replica2"}
