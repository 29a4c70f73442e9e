"""The balancers on fed figures: pure logic, no server needed."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from django_rwsplit import balancing
from django_rwsplit.health import load
from django_rwsplit.health.rotation import Rotation

# -- the balancers ---------------------------------------------------------


@pytest.fixture
def fresh_load():
    load.reset()
    yield
    load.reset()


def judged(rotation: Rotation) -> Rotation:
    """Renew the load verdict for ``rotation``'s members, as a round does."""
    load.judge(time.perf_counter(), rotation.members)
    return rotation


ADAPTIVE = balancing.BALANCERS["adaptive"]


def test_adaptive_keeps_the_weighted_order_when_the_load_is_equal(fresh_load):
    rotation = judged(Rotation({"r1": 3, "r2": 1}))
    picks = [ADAPTIVE.pick(rotation) for _ in range(8)]
    assert picks == ["r1", "r1", "r2", "r1"] * 2


def test_adaptive_avoids_a_replica_that_answers_slowly(fresh_load):
    rotation = Rotation({"r1": 1, "r2": 1})
    now = time.perf_counter()
    load.of("r1").sample(50.0, now)
    load.of("r2").sample(0.5, now)
    judged(rotation)
    assert [ADAPTIVE.pick(rotation) for _ in range(10)] == ["r2"] * 10
    assert ADAPTIVE.candidates(rotation) == ["r2", "r1"]


def test_adaptive_avoids_a_replica_with_queries_in_flight(fresh_load):
    rotation = Rotation({"r1": 1, "r2": 1})
    now = time.perf_counter()
    for alias in ("r1", "r2"):
        load.of(alias).sample(3.0, now)
    for query in range(3):
        load.begin("r1", query)
    judged(rotation)
    assert {ADAPTIVE.pick(rotation) for _ in range(6)} == {"r2"}


def test_finishing_queries_renew_the_verdict(fresh_load):
    rotation = judged(Rotation({"r1": 1, "r2": 1}))
    assert load.penalised == frozenset()
    time.sleep(load.JUDGE_EVERY)  # the verdict's minimum age, not a guess
    for query in ("slow", "slow again"):  # two 50 ms queries on r1
        started = time.perf_counter() - 0.05
        load.begin("r1", query)
        load.end("r1", query, started)
        time.sleep(load.JUDGE_EVERY)
    assert load.penalised == {"r1"}
    assert {ADAPTIVE.pick(rotation) for _ in range(4)} == {"r2"}


def test_a_slow_replica_wins_its_share_back_once_its_spike_decays(fresh_load):
    rotation = Rotation({"r1": 1, "r2": 1})
    long_ago = time.perf_counter() - 20 * load.DECAY_SECONDS
    load.of("r1").sample(50.0, long_ago)
    judged(rotation)
    assert Counter(ADAPTIVE.pick(rotation) for _ in range(10)) == {"r1": 5, "r2": 5}


def test_one_replica_needs_no_choice(fresh_load):
    rotation = Rotation({"r1": 1})
    load.of("r1").sample(500.0, time.perf_counter())
    judged(rotation)
    assert ADAPTIVE.pick(rotation) == "r1"


def test_round_robin_ignores_the_load(fresh_load):
    rotation = Rotation({"r1": 1, "r2": 1})
    load.of("r1").sample(50.0, time.perf_counter())
    judged(rotation)
    picks = [balancing.BALANCERS["round_robin"].pick(rotation) for _ in range(4)]
    assert picks == ["r1", "r2", "r1", "r2"]


def test_the_health_checks_load_counts_for_every_process(fresh_load):
    """Active sessions seen by the check raise a replica's cost here too."""
    rotation = Rotation({"r1": 1, "r2": 1})
    load.take_check("r1", 2.0, 6)
    load.take_check("r2", 2.0, 0)
    now = time.perf_counter()
    assert balancing.cost("r1", now) == pytest.approx(2.0 * 7)
    assert balancing.cost("r2", now) == pytest.approx(2.0)
    judged(rotation)
    assert {ADAPTIVE.pick(rotation) for _ in range(4)} == {"r2"}


def test_a_slow_check_is_the_neutral_figure_of_an_idle_replica(fresh_load):
    """A replica this process does not use is judged by the health check."""
    rotation = Rotation({"r1": 1, "r2": 1})
    load.take_check("r1", 9.0, 0)
    load.take_check("r2", 0.2, 0)
    judged(rotation)
    assert {ADAPTIVE.pick(rotation) for _ in range(4)} == {"r2"}
    load.take_check("r1", 0.3, 0)
    judged(rotation)
    assert Counter(ADAPTIVE.pick(rotation) for _ in range(4)) == {"r1": 2, "r2": 2}


def test_the_cheapest_replica_is_never_penalised(fresh_load):
    rotation = Rotation({"r1": 1, "r2": 1, "r3": 1})
    now = time.perf_counter()
    for alias, ms in (("r1", 40.0), ("r2", 35.0), ("r3", 20.0)):
        load.of(alias).sample(ms, now)
    assert load.judge(now, rotation.members) == {"r1", "r2"}
    assert {ADAPTIVE.pick(rotation) for _ in range(30)} == {"r3"}


def test_each_cluster_is_judged_among_its_own_replicas(fresh_load):
    now = time.perf_counter()
    for alias, ms in (("a1", 40.0), ("a2", 1.0), ("b1", 1.0), ("b2", 30.0)):
        load.of(alias).sample(ms, now)
    load.judge(now, frozenset({"a1", "a2"}), "default")
    # The other cluster's round does not drop the first one's verdict.
    assert load.judge(now, frozenset({"b1", "b2"}), "analytics") == {"a1", "b2"}
    # Finishing queries judge every cluster again, each with its members.
    assert load.judge(now) == {"a1", "b2"}


def test_random_other_draws_by_weight_and_never_the_first():
    rotation = Rotation({"a": 1, "b": 8, "c": 1})
    draws = Counter(rotation.random_other("a") for _ in range(2000))
    assert set(draws) == {"b", "c"}
    assert draws["b"] > 4 * draws["c"]
    assert Rotation({"a": 1}).random_other("a") is None
