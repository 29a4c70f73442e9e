"""Per-server load as this process sees it: pure logic, no server needed."""

from __future__ import annotations

import math

import pytest

from django_rwsplit.health import load


@pytest.fixture(autouse=True)
def fresh():
    load.reset()
    yield
    load.reset()


def test_slower_responses_raise_the_average_at_once():
    server = load.ServerLoad()
    server.sample(1.0, now=10.0)
    server.sample(41.0, now=10.0)
    assert server.latency_ms(10.0) == 21.0  # one alone: halfway
    server.sample(40.0, now=10.0)
    assert server.latency_ms(10.0) == 40.0  # two in a row: all the way


def test_an_isolated_slow_response_is_half_a_peak():
    server = load.ServerLoad()
    server.sample(1.0, now=10.0)
    server.sample(9.0, now=10.0)
    server.sample(1.0, now=10.0)
    assert server.latency_ms(10.0) == pytest.approx(5.0 - 4.0 * load.SMOOTHING)


def test_a_faster_response_pulls_the_average_down_by_the_smoothing():
    server = load.ServerLoad()
    server.sample(10.0, now=10.0)
    server.sample(2.0, now=10.0)
    assert server.latency_ms(10.0) == pytest.approx(10.0 - 8.0 * load.SMOOTHING)


def test_without_responses_the_average_decays_to_neutral():
    server = load.ServerLoad()
    server.neutral_ms = 1.0
    server.sample(41.0, now=0.0)
    one_tau = server.latency_ms(load.DECAY_SECONDS)
    assert one_tau == pytest.approx(1.0 + 40.0 / math.e)
    assert server.latency_ms(5 * load.DECAY_SECONDS) < 1.3


def test_no_measurement_means_the_neutral_figure_or_none():
    server = load.ServerLoad()
    assert server.latency_ms(0.0) is None
    server.neutral_ms = 0.5
    assert server.latency_ms(0.0) == 0.5


def test_begin_and_end_count_queries_in_flight():
    first, second = object(), object()
    t1 = load.begin("replica1", first)
    load.begin("replica1", second)
    assert load.of("replica1").outstanding == 2
    load.end("replica1", first, t1)
    assert load.of("replica1").outstanding == 1
    assert load.of("replica1").queries == 1
    load.end("replica1", second, t1, ok=False)  # a failure is no sample
    assert load.of("replica1").outstanding == 0
    assert load.of("replica1").queries == 1


def test_cost_is_latency_times_load():
    server = load.of("replica1")
    load.take_check("replica1", 1.5, 2)
    assert server.cost(0.0) == pytest.approx(1.5 * 3)
    load.begin("replica1", "a query")
    assert server.cost(0.0) == pytest.approx(1.5 * 4)


def test_an_average_from_the_future_is_not_decayed():
    """Another thread may sample after this one read the clock: no overflow."""
    server = load.ServerLoad()
    server.sample(5.0, now=1e6)
    assert server.latency_ms(0.0) == 5.0
    assert server.cost(0.0) == 5.0


# -- health checks' figures (issue 22: one slow check steered every read) ----

from collections import Counter  # noqa: E402

from django_rwsplit.balancing import AdaptiveBalancer  # noqa: E402
from django_rwsplit.health.rotation import Rotation  # noqa: E402

PAIR = Rotation({"replica1": 1, "replica2": 1})


def check_round(now: float, replica1_ms: float | None, replica2_ms: float = 1.0):
    """One health round's figures, fed as the monitor feeds them."""
    load.take_check("replica1", replica1_ms, 0)
    load.take_check("replica2", replica2_ms, 0)
    load.judge(now, PAIR.members)


def light_traffic(reads: int = 40) -> Counter[str]:
    """Sequential reads: nothing in flight, no latency samples of their own."""
    balancer = AdaptiveBalancer()
    return Counter(balancer.pick(PAIR) for _ in range(reads))


def assert_spread(counts: Counter[str]) -> None:
    total = sum(counts.values())
    for alias in ("replica1", "replica2"):
        assert 0.3 * total <= counts[alias] <= 0.7 * total, counts


def test_one_slow_check_does_not_steer_light_traffic():
    for now in range(3):
        check_round(now, 1.0)
    check_round(3, 250.0)  # one outlier: a hiccup of the check itself
    assert "replica1" not in load.penalised
    assert_spread(light_traffic())


def test_two_slow_checks_in_a_row_do_penalise():
    for now in range(3):
        check_round(now, 1.0)
    check_round(3, 250.0)
    check_round(4, 240.0)
    assert load.penalised == {"replica1"}
    assert light_traffic()["replica1"] == 0


def test_a_readmitted_replica_spreads_again_within_two_check_intervals():
    for now in range(3):
        check_round(now, 1.0)
    for now in range(3, 10):  # stopped: its checks measure nothing
        check_round(now, None)
    check_round(10, 300.0)  # readmitted: the first check of a cold server
    check_round(11, 1.0)
    check_round(12, 1.0)
    assert_spread(light_traffic())


def test_a_first_check_alone_is_the_figure_and_two_take_the_lower():
    load.take_check("replica1", 5.0, 0)
    assert load.of("replica1").neutral_ms == 5.0
    load.take_check("replica1", 90.0, 0)
    assert load.of("replica1").neutral_ms == 5.0
    load.take_check("replica1", 80.0, 0)
    assert load.of("replica1").neutral_ms == 80.0
