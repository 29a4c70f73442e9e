"""Replica health against the real cluster: lag, death, freezing, readmission."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import Counter
from dataclasses import replace

import psycopg
import pytest
from django.db import connections, router, transaction
from django.test import override_settings

from django_rwsplit import conf, pinning, planner, signals
from django_rwsplit.health import notify
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.monitor import SharedRounds
from django_rwsplit.health.probes import ProbeFailure, ReplicaReading
from tests.testapp.models import Item
from tests.utils import (
    fast_health,
    rotation,
    server_port,
    start_health,
    wait_until,
)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

INTERVAL = 0.2
TIMEOUT = 0.5
FAST = fast_health(
    CHECK_INTERVAL=INTERVAL, CHECK_TIMEOUT=TIMEOUT, READMIT_AFTER=3, MAX_LAG_SECONDS=0.5
)


class Transitions:
    """Record replica_ejected / replica_readmitted signals."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, int]] = []
        signals.replica_ejected.connect(self.ejected)
        signals.replica_readmitted.connect(self.readmitted)

    def ejected(self, alias, reason, **kwargs):
        self.events.append(("ejected", alias, reason, self._rounds()))

    def readmitted(self, alias, reason, **kwargs):
        self.events.append(("readmitted", alias, reason, self._rounds()))

    def _rounds(self) -> int:
        state = health_registry.current()
        return state.monitor.rounds if state else 0

    def of(self, kind: str, alias: str) -> list[tuple[str, str, str, int]]:
        assert notify.flush(), "signals not delivered"
        return [e for e in self.events if e[0] == kind and e[1] == alias]

    def close(self) -> None:
        signals.replica_ejected.disconnect(self.ejected)
        signals.replica_readmitted.disconnect(self.readmitted)


@pytest.fixture
def transitions():
    recorder = Transitions()
    yield recorder
    recorder.close()


@override_settings(RWSPLIT=FAST)
def test_idle_primary_with_caught_up_replicas_has_zero_lag(cluster):
    cluster.wait_caught_up()
    start_health()
    state = health_registry.process_health(conf.get_config())
    rounds = state.monitor.rounds
    wait_until(lambda: state.monitor.rounds >= rounds + 2, timeout=5)
    snapshot = health_registry.snapshot()
    assert snapshot is not None and snapshot.status == "ok"
    for replica in snapshot.replicas:
        assert replica.in_rotation
        assert replica.lag_seconds == 0.0 and replica.lag_bytes == 0


@override_settings(RWSPLIT=FAST)
def test_paused_replica_leaves_rotation_then_returns(cluster, ports, transitions):
    start_health()
    cluster.pause_replay("replica1")
    first_write = time.monotonic()
    bound = FAST["MAX_LAG_SECONDS"] + 3 * INTERVAL + TIMEOUT

    def write_and_check() -> bool:
        Item.objects.create(name="tick")
        return "replica1" not in rotation()

    wait_until(write_and_check, timeout=bound + 5)
    ejected_after = time.monotonic() - first_write
    assert ejected_after <= bound, f"ejected after {ejected_after:.2f} s"
    (event,) = transitions.of("ejected", "replica1")
    assert "lag" in event[2]
    connections.close_all()  # like a new request under CONN_MAX_AGE=0
    pinning.forget_unscoped_write()  # ... whose reads the writes above do not pin
    served = Counter(server_port(router.db_for_read(Item)) for _ in range(200))
    assert set(served) == {ports["replica2"]}

    cluster.resume_replay("replica1")
    wait_until(lambda: "replica1" in rotation(), timeout=10)
    # The round shows the rotation before its signal is queued (then sent
    # from the notifier's thread): wait for the signal itself.
    wait_until(lambda: len(transitions.of("readmitted", "replica1")) >= 2, timeout=10)
    readmitted = transitions.of("readmitted", "replica1")[-1]
    assert transitions.events.index(readmitted) > transitions.events.index(event)
    assert readmitted[3] - event[3] >= FAST["READMIT_AFTER"]


# Round-robin: under the adaptive balancer a replica1 that the first round found
# costlier stays penalised until the next round (30 s away), every read goes to
# replica2, and replica1's stop is never seen (seen in CI).
@override_settings(RWSPLIT={**FAST, "CHECK_INTERVAL": 30.0, "BALANCER": "round_robin"})
def test_stopped_replica_is_ejected_on_first_failed_connect(
    cluster, ports, transitions
):
    """Passive detection: no health check runs during the test (30 s interval)."""
    start_health()
    cluster.stop_replica("replica1")
    errors, served = 0, Counter()
    for _ in range(100):
        connections.close_all()
        try:
            served[server_port(router.db_for_read(Item))] += 1
        except Exception:  # noqa: BLE001 - counted
            errors += 1
    assert errors == 0
    assert ports["replica1"] not in served
    (event,) = transitions.of("ejected", "replica1")
    assert event[2].startswith("connection failed")
    assert rotation() == {"replica2"}


@override_settings(RWSPLIT=FAST)
def test_stopped_replica_leaves_rotation_and_reads_keep_succeeding(cluster, ports):
    start_health()
    cluster.stop_replica("replica2")
    wait_until(lambda: "replica2" not in rotation(), timeout=3 * INTERVAL + TIMEOUT + 1)
    connections.close_all()
    served = Counter(server_port(router.db_for_read(Item)) for _ in range(100))
    assert set(served) == {ports["replica1"]}
    cluster.start_replica("replica2")
    wait_until(lambda: "replica2" in rotation(), timeout=15)


@override_settings(RWSPLIT=FAST)
def test_frozen_replica_never_holds_a_read_past_the_deadline(cluster, ports):
    start_health()
    cluster.freeze("replica1")
    connect_timeout = 2  # OPTIONS["connect_timeout"] in tests/settings.py
    limit = TIMEOUT + connect_timeout + 1.0
    latencies: list[float] = []
    errors: list[BaseException] = []

    def one_request() -> None:
        started = time.monotonic()
        try:
            server_port(router.db_for_read(Item))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()
            latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=one_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=limit + 5)
    assert not errors
    assert len(latencies) == 8 and max(latencies) < limit
    wait_until(lambda: "replica1" not in rotation(), timeout=3 * INTERVAL + TIMEOUT)
    connections.close_all()
    served = {server_port(router.db_for_read(Item)) for _ in range(50)}
    assert served == {ports["replica2"]}
    cluster.thaw("replica1")
    wait_until(lambda: "replica1" in rotation(), timeout=15)


@override_settings(RWSPLIT=FAST)
def test_all_replicas_down_sends_reads_to_primary(cluster, ports):
    start_health()
    cluster.stop_replica("replica1")
    cluster.stop_replica("replica2")
    wait_until(lambda: not rotation(), timeout=3 * INTERVAL + TIMEOUT + 1)
    connections.close_all()
    assert {server_port(router.db_for_read(Item)) for _ in range(20)} == {
        ports["default"]
    }
    assert health_registry.snapshot().status == "critical"


@override_settings(RWSPLIT={**FAST, "FALLBACK": "error"})
def test_fallback_error_raises_a_clear_exception(cluster):
    from django_rwsplit.exceptions import NoReplicaAvailable

    start_health()
    cluster.stop_replica("replica1")
    cluster.stop_replica("replica2")
    wait_until(lambda: not rotation(), timeout=3 * INTERVAL + TIMEOUT + 1)
    with pytest.raises(NoReplicaAvailable, match="FALLBACK"):
        list(Item.objects.all())


@override_settings(RWSPLIT={**FAST, "MAX_LAG_SECONDS": 0.6, "READMIT_AFTER": 2})
@pytest.mark.long
def test_threshold_hugging_replica_does_not_flap(cluster, transitions):
    start_health()
    cluster.set_apply_delay("replica1", 600)
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        Item.objects.create(name="steady")
        time.sleep(0.05)  # a steady write rate, not a wait for a condition
    assert len(transitions.of("ejected", "replica1")) <= 1
    initial = transitions.of("readmitted", "replica1")
    assert len(initial) == 1 and transitions.events.index(initial[0]) < 2


@override_settings(RWSPLIT=FAST)
def test_forked_child_measures_for_itself(cluster):
    start_health()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = False
        try:
            ok = health_registry.current() is None
            config = conf.get_config()
            planner.for_config(config).plan()
            child = health_registry.current()
            ok = ok and child is not None and child.monitor.is_alive()
            ok = ok and child.monitor.rounds >= 1 and child.pid == os.getpid()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


HEALTH_PROCESS = """
import json, os, sys, time
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
from django.conf import settings
django.setup()
for alias in settings.DATABASES:
    settings.DATABASES[alias]["NAME"] = "postgres"
settings.RWSPLIT = {**settings.RWSPLIT, "CHECK_INTERVAL": 0.2, "HEALTH_CACHE": "redis"}
from django_rwsplit import conf
from django_rwsplit.health import registry as health_registry
state = health_registry.process_health(conf.get_config())
start = time.time()
time.sleep(float(sys.argv[1]))  # the observation window of this process
shared = state.monitor.shared
print(json.dumps({"measured": shared.measured, "borrowed": shared.borrowed,
                  "rotation": sorted(state.rotation.members),
                  "start": start, "end": time.time()}))
"""


def test_two_processes_share_health_through_redis(cluster):
    import json
    import subprocess
    import sys

    from django.core.cache import caches

    caches["redis"].clear()
    window = 4.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HEALTH_PROCESS, str(window)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "RWSPLIT_CLUSTER_PORT": str(cluster.primary.port)},
        )
        for _ in range(2)
    ]
    results = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    assert all(r["rotation"] == ["replica1", "replica2"] for r in results)
    measured = sum(r["measured"] for r in results)
    borrowed = sum(r["borrowed"] for r in results)
    # The processes start when a loaded machine lets them: their windows
    # overlap, but not exactly. Over the span of both, the pair measures once
    # per interval (plus each one's first round), not once each; while both
    # run, the one that does not measure borrows.
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    both = min(r["end"] for r in results) - max(r["start"] for r in results)
    assert both >= window / 2, "the two processes barely ran at the same time"
    interval = 0.2
    # Without the sharing, the pair would measure both / interval more times
    # (at least 10) and borrow nothing. The bounds sit halfway: a loaded
    # machine that delays the holder's rounds past their freshness makes the
    # other measure now and then (25 rounds for a 4 s span seen in CI).
    assert measured <= span / interval + both / (2 * interval)
    assert borrowed >= both / (2 * interval)


EXITING_PROCESS = """
import atexit, os, time, django
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
from django.conf import settings
django.setup()
for alias in settings.DATABASES:
    settings.DATABASES[alias]["NAME"] = "postgres"
settings.RWSPLIT = {**settings.RWSPLIT, "CHECK_INTERVAL": 0.05}
from django_rwsplit import conf
from django_rwsplit.health import registry as health_registry
state = health_registry.process_health(conf.get_config())

def rounds_during_exit():
    # atexit runs after threading's exit hooks: the monitor keeps going.
    wanted, deadline = state.monitor.rounds + 3, time.monotonic() + 20
    while state.monitor.rounds < wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    print("rounds during exit:", state.monitor.rounds >= wanted, flush=True)

atexit.register(rounds_during_exit)
"""


def test_monitor_rounds_at_interpreter_exit_stay_quiet(rwsplit_cluster):
    """A process exiting (a gunicorn worker recycled) logs no failed rounds."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", EXITING_PROCESS],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RWSPLIT_CLUSTER_PORT": str(rwsplit_cluster.primary.port)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rounds during exit: True" in done.stdout
    assert "Replica health round failed" not in done.stderr, done.stderr[-2000:]


@override_settings(RWSPLIT=FAST)
def test_query_on_a_connection_to_a_stopped_replica_is_retried(cluster, ports):
    start_health()
    assert server_port("replica1") == ports["replica1"]
    cluster.stop_replica("replica1")
    # The same, now broken, connection: the retry runs on a substitute.
    assert server_port("replica1") in (ports["replica2"], ports["default"])
    assert "replica1" not in rotation()


@override_settings(RWSPLIT=FAST)
def test_query_in_flight_on_a_frozen_replica_is_released_and_retried(cluster, ports):
    start_health()
    reader, outcome = read_in_thread(SLOW_READ)
    wait_until(lambda: running_on_replica1(cluster, SLOW_READ), timeout=5)
    cluster.freeze("replica1")
    reader.join(timeout=30)
    assert "error" not in outcome, outcome
    assert outcome["port"] in (ports["replica2"], ports["default"])
    # Released after one round found it hung, then retried (1 s of sleep again).
    assert outcome["elapsed"] < 1 + 2 * (INTERVAL + TIMEOUT) + 1 + 1


def test_shared_rounds_fall_back_to_local_measuring_when_the_measurer_stops():
    """The election logic, on the real Redis: stale shared rounds are not trusted."""
    from django.core.cache import caches

    interval = 0.1
    leader, follower = SharedRounds("redis", interval), SharedRounds("redis", interval)
    caches["redis"].delete_many([leader.lock_key, leader.round_key])
    from tests.test_tracker import primary

    def measured_by(name: str):
        return lambda: (replace(primary(time.time(), 1), endpoint=name), [])

    leader.get(measured_by("leader"))
    assert leader.measured == 1
    (got, _), _, _ = follower.get(measured_by("follower"))
    assert (follower.borrowed, follower.measured) == (1, 0)
    assert got.endpoint == "leader"
    # The leader stops (dies) while still holding the lock for lock_ttl seconds;
    # once its round is older than three intervals the follower measures itself.
    stale_after = time.monotonic() + 3 * interval
    wait_until(lambda: time.monotonic() > stale_after, timeout=1)
    (got, _), _, _ = follower.get(measured_by("follower"))
    assert follower.measured == 1 and got.endpoint == "follower"


def _measured_by(name: str):
    from tests.test_tracker import primary

    return lambda: (replace(primary(time.time(), 1), endpoint=name), [])


def test_shared_rounds_of_another_cluster_are_never_borrowed():
    """Two deployments on one Redis: keys carry the cluster's identity."""
    from django.core.cache import caches

    caches["redis"].clear()
    ours = SharedRounds("redis", 1.0, identity="ours")
    theirs = SharedRounds("redis", 1.0, identity="theirs")
    theirs.get(_measured_by("theirs"))
    (got, _), _, _ = ours.get(_measured_by("ours"))
    assert got.endpoint == "ours" and ours.borrowed == 0


def test_a_leader_clock_running_ahead_does_not_keep_its_round_fresh():
    """Freshness is judged by when this process saw the round arrive."""
    from django.core.cache import caches

    interval = 0.1
    follower = SharedRounds("redis", interval, identity="clock")
    caches["redis"].clear()
    _primary, _ = _measured_by("leader")()
    future = {
        "id": "leader:1",
        "at": time.time() + 3600,  # the leader's clock, an hour ahead
        "primary": dataclasses.asdict(_primary),
        "replicas": [],
    }
    caches["redis"].set(follower.round_key, future, timeout=60)
    caches["redis"].set(follower.lock_key, "leader", timeout=60)
    (got, _), _, _ = follower.get(_measured_by("follower"))
    assert got.endpoint == "leader"
    deadline = time.monotonic() + 3 * interval
    wait_until(lambda: time.monotonic() > deadline, timeout=1)
    (got, _), _, _ = follower.get(_measured_by("follower"))
    assert got.endpoint == "follower" and follower.measured == 1


@pytest.mark.parametrize(
    "stored",
    [
        {"id": "x:1", "at": 0.0, "primary": {"alias": "default"}, "replicas": []},
        {"id": "x:2", "at": 0.0, "primary": None, "replicas": None},
        {"id": "x:3"},
        "not a round",
    ],
)
def test_a_round_that_does_not_decode_is_measured_locally(stored):
    """Another version's round (or garbage) never stops this process measuring."""
    from django.core.cache import caches

    follower = SharedRounds("redis", 1.0, identity="decode")
    caches["redis"].clear()
    if isinstance(stored, dict):
        stored = {**stored, "at": time.time()}
    caches["redis"].set(follower.round_key, stored, timeout=60)
    caches["redis"].set(follower.lock_key, "someone else", timeout=60)
    (got, _), _, _ = follower.get(_measured_by("follower"))
    assert got.endpoint == "follower" and follower.measured == 1


class TimedOutRound:
    """
    One round of the monitor reports replica1 as not answering in time.

    That round does not probe replica1 at all, so it comes at once even
    while replica1 is frozen (a real probe would take CHECK_TIMEOUT).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from django_rwsplit.health import monitor

        self.real = monitor.measure
        self.armed, self.entered = threading.Event(), threading.Event()
        self.go, self.done = threading.Event(), threading.Event()
        monkeypatch.setattr(monitor, "measure", self.measure)

    def measure(self, config, databases, *args, **kwargs):
        if not self.armed.is_set() or self.done.is_set():
            return self.real(config, databases, *args, **kwargs)
        self.entered.set()  # no probe of replica1 is in flight now
        assert self.go.wait(10)
        others = {a: w for a, w in config.replicas.items() if a != "replica1"}
        primary, readings = self.real(
            dataclasses.replace(config, replicas=others), databases, *args, **kwargs
        )
        hung = ReplicaReading(
            alias="replica1",
            endpoint="replica1",
            reachable=False,
            checked_at=time.time(),
            error="timeout after 3000 ms",
            failure=ProbeFailure.TIMEOUT,
        )
        self.done.set()
        return primary, [*readings, hung]

    def hold(self) -> None:
        """Wait until the monitor is inside the next round, before its probes."""
        self.armed.set()
        assert self.entered.wait(5), "no round came"

    def now(self) -> None:
        """Let the held round finish, replica1 timed out."""
        self.go.set()
        assert self.done.wait(10), "the round did not finish"


def read_in_thread(sql: str) -> tuple[threading.Thread, dict[str, object]]:
    """Run ``sql`` on replica1 in a thread; its outcome: port or error, seconds."""
    outcome: dict[str, object] = {}

    def read() -> None:
        started = time.monotonic()
        try:
            with connections["replica1"].cursor() as cursor:
                cursor.execute(sql)
                outcome["port"] = cursor.fetchone()[-1]
        except BaseException as error:  # noqa: BLE001 - asserted by the caller
            outcome["error"] = error
        finally:
            outcome["elapsed"] = time.monotonic() - started
            connections.close_all()

    reader = threading.Thread(target=read)
    reader.start()
    return reader, outcome


def running_on_replica1(cluster, sql: str) -> bool:
    rows = cluster.execute(
        "replica1",
        "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
        params=[sql],
    )
    return rows[0][0] == 1


SLOW_READ = "SELECT pg_sleep(1), inet_server_port()"
LONG_TIMEOUT = 3.0


@override_settings(
    RWSPLIT=fast_health(CHECK_INTERVAL=INTERVAL, CHECK_TIMEOUT=LONG_TIMEOUT)
)
def test_a_query_younger_than_check_timeout_survives_a_timed_out_check(
    cluster, ports, monkeypatch
):
    """
    One check of replica1 gets no answer in time (made so here: the probe's
    reading is replaced) while a 1 s query runs there. The query has waited
    less than CHECK_TIMEOUT and the next check finds the replica answering:
    it is not released and returns from replica1.
    """
    timed_out = TimedOutRound(monkeypatch)
    start_health()
    reader, outcome = read_in_thread(SLOW_READ)
    wait_until(lambda: running_on_replica1(cluster, SLOW_READ), timeout=5)
    timed_out.hold()
    timed_out.now()
    ran_while_young = not outcome  # the round came while the query still ran
    reader.join(timeout=30)
    assert ran_while_young, "the query ended before the timed-out round"
    assert outcome.get("port") == ports["replica1"], outcome


@override_settings(
    RWSPLIT=fast_health(CHECK_INTERVAL=INTERVAL, CHECK_TIMEOUT=LONG_TIMEOUT)
)
@pytest.mark.long
def test_a_young_query_on_a_hung_replica_is_released_once_it_waited_check_timeout(
    cluster, ports, monkeypatch
):
    """
    replica1 is frozen (SIGSTOP) with a query just begun there, and a round
    finds it hung at once. The query is released when it has waited
    CHECK_TIMEOUT, not before, and retried elsewhere.
    """
    timed_out = TimedOutRound(monkeypatch)
    start_health()
    reader, outcome = read_in_thread(SLOW_READ)
    wait_until(lambda: running_on_replica1(cluster, SLOW_READ), timeout=5)
    timed_out.hold()
    cluster.freeze("replica1")
    try:
        timed_out.now()
        reader.join(timeout=30)
    finally:
        cluster.thaw("replica1")
    assert "error" not in outcome, outcome
    assert outcome["port"] in (ports["replica2"], ports["default"])
    # Released at CHECK_TIMEOUT of waiting, then 1 s of sleep again elsewhere.
    assert LONG_TIMEOUT + 1 <= outcome["elapsed"] < LONG_TIMEOUT + 1 + 2, outcome


LONG_QUERY = "SELECT pg_sleep(30) /* released and cancelled */"


@override_settings(RWSPLIT=fast_health(CHECK_INTERVAL=INTERVAL))
def test_a_released_query_is_cancelled_on_the_server(cluster, monkeypatch):
    """
    A query that has waited past CHECK_TIMEOUT on a replica whose check timed
    out is released, and its cancel request stops it on the server: a server
    that was slow, not frozen, would otherwise keep running it (pg_sleep does
    not notice its client is gone).
    """
    from django_rwsplit.health import release

    if not hasattr(psycopg.pq.PGconn, "cancel_conn") or psycopg.pq.version() < 170000:
        pytest.skip("needs libpq 17 (PQcancelStart)")
    timed_out = TimedOutRound(monkeypatch)
    start_health()
    outcome: dict[str, object] = {}

    def read() -> None:
        try:
            # In a transaction: no retry elsewhere, the error comes back.
            with (
                transaction.atomic(using="replica1"),
                connections["replica1"].cursor() as cursor,
            ):
                cursor.execute(LONG_QUERY)
        except BaseException as error:  # noqa: BLE001 - asserted below
            outcome["error"] = error
        finally:
            connections.close_all()

    reader = threading.Thread(target=read)
    reader.start()
    wait_until(lambda: running_on_replica1(cluster, LONG_QUERY), timeout=5)
    time.sleep(0.6)  # the query must be older than CHECK_TIMEOUT (0.5 s)
    timed_out.hold()
    timed_out.now()
    reader.join(timeout=10)
    assert not reader.is_alive(), "the query was not released"
    assert "error" in outcome
    assert release.CANCEL_WITHIN > 1
    # The server stops running it: cancelled, not left to sleep 30 s.
    wait_until(lambda: not running_on_replica1(cluster, LONG_QUERY), timeout=5)
