"""
The round-robin order across real health rounds.

What the balancers do with load and light traffic is tested on fed figures
(tests/test_balancing.py, tests/test_load.py, tests/test_rotation.py); the
shares a slowed replica keeps under a real WSGI server's load are measured
by benchmarks/balancing.py, not asserted by a gating test (a busy machine
moves them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from django.test import override_settings

from django_rwsplit import observe
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.rotation import smooth_weighted_sequence
from tests.testapp.models import Item
from tests.utils import fast_health, start_health, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]


class ReadLog:
    """An observe listener that records where each routed read went."""

    def __init__(self) -> None:
        self.aliases: list[str] = []

    def read(self, alias: str, reason: str | None) -> None:
        self.aliases.append(alias)

    def pin(self, reason: str) -> None:
        pass


@pytest.fixture
def read_log() -> Iterator[ReadLog]:
    log = ReadLog()
    observe.subscribe(log)
    yield log
    observe.unsubscribe(log)


def test_weighted_round_robin_keeps_its_exact_order_across_rounds(cluster, read_log):
    weights = {"replica1": 3, "replica2": 1}
    settings = fast_health(
        REPLICAS={alias: {"WEIGHT": w} for alias, w in weights.items()},
        BALANCER="round_robin",
        CHECK_INTERVAL=0.1,
    )
    with override_settings(RWSPLIT=settings):
        start_health()
        state = health_registry.current()
        assert state is not None
        read_log.aliases.clear()
        # Reads at uneven times: 1, 2 or 3 between two health rounds.
        for burst in [1, 2, 3] * 6:
            before = state.tracker.primary
            wait_until(lambda before=before: state.tracker.primary is not before, 5)
            for _ in range(burst):
                list(Item.objects.all()[:1])
        assert state.rotation.members == frozenset(weights)
    period = smooth_weighted_sequence(weights)
    order = read_log.aliases
    cycle = period * (len(order) // len(period) + 2)
    offsets = [k for k in range(len(period)) if cycle[k : k + len(order)] == order]
    assert offsets, order
    assert Counter(order)["replica2"] == len(order) // 4
