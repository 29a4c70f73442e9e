"""
The balancers on the real cluster: light traffic, round-robin order across
health rounds, and a slowed replica under load from a real WSGI server.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from django.test import override_settings

from django_rwsplit import observe
from django_rwsplit.health import state as health_state
from django_rwsplit.health.rotation import Rotation, smooth_weighted_sequence
from django_rwsplit.health.tracker import Tracker
from django_rwsplit.testing.cluster import LocalCluster
from tests.chaos.servers import (
    ChaosSettings,
    Server,
    example_env,
    prepare_database,
    start_server,
    warm_up,
)
from tests.testapp.models import Item
from tests.utils import fast_health, start_health, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

ROUNDS = 40


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


def one_read_per_round(log: ReadLog, rounds: int = ROUNDS) -> Counter[str]:
    """Wait for each new health round, then route one read (outside a request)."""
    state = health_state.current()
    assert state is not None
    log.aliases.clear()
    for _ in range(rounds):
        before = state.tracker.primary
        wait_until(lambda before=before: state.tracker.primary is not before, 5)
        list(Item.objects.all()[:1])
    return Counter(log.aliases)


def restart_the_cycle_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defect this fixes: a new rotation, at its first member, each round."""

    def rebuild(self: Tracker) -> None:
        weights = {
            alias: weight
            for alias, weight in self.config.replicas.items()
            if self._states[alias].in_rotation
        }
        self.rotation = Rotation(weights)
        if self.on_rotation is not None:
            self.on_rotation(self.rotation)

    monkeypatch.setattr(Tracker, "_rebuild", rebuild)


def spread_evenly(served: Counter[str]) -> bool:
    total = sum(served.values())
    return total == ROUNDS and all(
        0.4 * total <= served[alias] <= 0.6 * total
        for alias in ("replica1", "replica2")
    )


@pytest.mark.long
@pytest.mark.parametrize("balancer", ["adaptive", "round_robin"])
def test_light_traffic_spreads_over_both_replicas(cluster, read_log, balancer):
    """
    One read per round: at half the default interval for the adaptive
    balancer, whose latency average decays in seconds, so the reads are as far
    apart as the issue's "about one read per health round" needs (20 s).
    """
    # Round-robin keeps no decaying state: one read per quick round will do.
    interval = 0.5 if balancer == "adaptive" else 0.1
    with override_settings(
        RWSPLIT=fast_health(BALANCER=balancer, CHECK_INTERVAL=interval)
    ):
        start_health()
        served = one_read_per_round(read_log)
    assert spread_evenly(served), served


@pytest.mark.long
@pytest.mark.parametrize("balancer", ["adaptive", "round_robin"])
def test_light_traffic_check_fails_when_the_cycle_restarts_each_round(
    cluster, read_log, monkeypatch, balancer
):
    """The same measure catches the old defect: every read on replica1."""
    restart_the_cycle_every_round(monkeypatch)
    with override_settings(RWSPLIT=fast_health(BALANCER=balancer, CHECK_INTERVAL=0.1)):
        start_health()
        served = one_read_per_round(read_log)
    assert not spread_evenly(served), served
    assert served["replica1"] > served["replica2"]


def test_weighted_round_robin_keeps_its_exact_order_across_rounds(cluster, read_log):
    weights = {"replica1": 3, "replica2": 1}
    settings = fast_health(
        REPLICAS={alias: {"WEIGHT": w} for alias, w in weights.items()},
        BALANCER="round_robin",
        CHECK_INTERVAL=0.1,
    )
    with override_settings(RWSPLIT=settings):
        start_health()
        state = health_state.current()
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


# -- a slowed replica under a real WSGI server ------------------------------------


def replica_reads(server: Server, seconds: float, clients: int = 6) -> Counter[int]:
    """Read concurrently for ``seconds``; count the database ports that answered."""
    served: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        mine: Counter[int] = Counter()
        try:
            while time.monotonic() < deadline:
                connection.request("GET", "/api/read/1/")
                response = connection.getresponse()
                body = json.loads(response.read() or b"{}")
                if response.status == 200 and body.get("port"):
                    mine[body["port"]] += 1
        finally:
            connection.close()
            with lock:
                served.update(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return served


def share(served: Counter[int], port: int) -> float:
    total = sum(served.values())
    return served[port] / total if total else 0.0


@pytest.fixture(scope="module")
def balance_database(rwsplit_cluster: LocalCluster) -> ChaosSettings:
    settings = ChaosSettings(database="rwsplit_balance")
    prepare_database(rwsplit_cluster, settings)
    return settings


@pytest.mark.long
def test_adaptive_moves_reads_off_a_slowed_replica_and_back(
    cluster, balance_database, tmp_path
):
    slow_port = cluster.replicas[0].port
    replica_ports = [r.port for r in cluster.replicas]
    shares: dict[str, float] = {}
    for balancer in ("round_robin", "adaptive"):
        settings = ChaosSettings(database=balance_database.database, balancer=balancer)
        server = start_server(
            "wsgi",
            example_env(cluster, settings),
            tmp_path,
            workers=2,
            threads=4,
        )
        try:
            warm_up({"wsgi": server}, replica_ports)
            cluster.slow("replica1", 4)
            try:
                replica_reads(server, 1.0)  # the balancer's reaction, not measured
                # Eight seconds: the adaptive share moves in cycles of about
                # 1.5 s (a penalised replica's average decays back, a probe
                # finds it slow again), so a longer window averages several.
                shares[balancer] = share(replica_reads(server, 8.0), slow_port)
            finally:
                cluster.unslow("replica1")
            if balancer == "adaptive":
                healed = time.monotonic()
                # Back to a fair share within a few seconds of the heal.
                wait_until(
                    lambda server=server: (
                        share(replica_reads(server, 1.0), slow_port) >= 0.3
                    ),
                    timeout=8,
                    interval=0,
                )
                shares["recovered after (s)"] = time.monotonic() - healed
        finally:
            server.stop()
    print(f"slowed replica's share of reads: {shares}")
    assert shares["round_robin"] >= 0.4  # blind to load: half the reads
    # Clearly smaller. Quiet runs give 0.14-0.24 (the benchmark's goal, <= 20 %,
    # is measured there); a busy 2-core CI machine (other virtualenvs being
    # built) once gave 0.30 in a 4 s window, over the 0.25 this asserted then.
    assert shares["adaptive"] <= 0.7 * shares["round_robin"], shares
