"""health.notify: signals delivered from their own thread, in order, robustly."""

from __future__ import annotations

import logging
import threading

from django.dispatch import Signal

from django_rwsplit.health import notify


def test_signals_arrive_in_order_from_another_thread():
    signal = Signal()
    seen: list[tuple[int, str]] = []

    def receiver(sender, number, **kwargs):
        seen.append((number, threading.current_thread().name))

    signal.connect(receiver, weak=False)
    try:
        for number in range(20):
            notify.send(signal, sender=None, number=number)
        assert notify.flush(5.0)
    finally:
        signal.disconnect(receiver)
    assert [number for number, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"django_rwsplit-notify"}


def test_a_failing_receiver_is_logged_and_the_next_ones_still_hear(caplog):
    signal = Signal()
    heard: list[int] = []

    def broken(sender, **kwargs):
        raise RuntimeError("receiver broke")

    def listening(sender, number, **kwargs):
        heard.append(number)

    signal.connect(broken, weak=False)
    signal.connect(listening, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="django_rwsplit"):
            notify.send(signal, sender=None, number=1)
            notify.send(signal, sender=None, number=2)
            assert notify.flush(5.0)
    finally:
        signal.disconnect(broken)
        signal.disconnect(listening)
    assert heard == [1, 2]
    ours = [
        r for r in caplog.records if r.name == "django_rwsplit" and "failed" in r.msg
    ]
    assert len(ours) == 2


def test_flush_waits_for_a_slow_receiver_and_gives_up_at_its_timeout():
    signal = Signal()
    release = threading.Event()

    def slow(sender, **kwargs):
        release.wait(10)

    signal.connect(slow, weak=False)
    try:
        notify.send(signal, sender=None)
        assert notify.flush(0.05) is False
        release.set()
        assert notify.flush(5.0) is True
    finally:
        signal.disconnect(slow)
