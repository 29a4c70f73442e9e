"""process_state: the one reset of the process's health and load state."""

from __future__ import annotations

import os

import pytest
from django.test import override_settings

from django_rwsplit import process_state
from django_rwsplit.health import load
from django_rwsplit.health import registry as health_registry


def test_reset_forgets_the_load_measured_so_far():
    load.of("replica1").sample(40.0, now=1.0)
    load.take_check("replica1", 5.0, 3)
    process_state.reset()
    fresh = load.of("replica1")
    assert fresh.peak_ms is None and fresh.neutral_ms is None
    assert fresh.active_backends == 0


def test_a_settings_change_goes_through_the_same_reset():
    load.of("replica1").sample(40.0, now=1.0)
    with override_settings(RWSPLIT={"REPLICAS": []}):
        assert load.of("replica1").peak_ms is None
    assert health_registry.current() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_starts_with_no_measurements():
    load.of("replica1").sample(40.0, now=1.0)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the hooks registered in AppConfig.ready() have run
        os.close(read)
        clean = (
            load.of("replica1").peak_ms is None and health_registry.current() is None
        )
        os.write(write, b"1" if clean else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(child, 0)
    assert answer == b"1"
    assert load.of("replica1").peak_ms == 40.0  # the parent keeps its own


def test_reads_made_together_before_the_first_round_all_wait_for_it():
    """gthread workers: every concurrent first read routes by the first round."""
    import threading
    import time
    from types import SimpleNamespace

    from django_rwsplit.health.cluster_state import ProcessHealth

    done = threading.Event()
    state = SimpleNamespace(
        monitor=SimpleNamespace(first_round=done),
        first_round_due=time.monotonic() + 5.0,
    )
    answers: list[bool] = []

    def read() -> None:
        answers.append(ProcessHealth.await_first_round(state))  # type: ignore[arg-type]

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    time.sleep(0.2)
    done.set()
    for reader in readers:
        reader.join(10)
    assert answers == [True] * 4
    assert ProcessHealth.await_first_round(state) is False  # type: ignore[arg-type]


def test_after_the_first_rounds_deadline_no_read_waits():
    import threading
    import time
    from types import SimpleNamespace

    from django_rwsplit.health.cluster_state import ProcessHealth

    state = SimpleNamespace(
        monitor=SimpleNamespace(first_round=threading.Event()),
        first_round_due=time.monotonic() - 0.01,
    )
    started = time.monotonic()
    assert ProcessHealth.await_first_round(state) is False  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.1
