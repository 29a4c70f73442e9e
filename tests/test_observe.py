"""The per-read event channel: subscribe, unsubscribe, delivery order."""

from __future__ import annotations

import pytest

from django_rwsplit import observe


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, str, str | None]]) -> None:
        self.name = name
        self.log = log

    def read(self, alias: str, reason: str | None) -> None:
        self.log.append((self.name, alias, reason))

    def pin(self, reason: str) -> None:
        self.log.append((self.name, "pin", reason))


@pytest.fixture(autouse=True)
def no_listeners():
    saved = observe.listeners
    observe.listeners = ()
    yield
    observe.listeners = saved


def test_events_reach_every_listener_in_subscription_order():
    log: list[tuple[str, str, str | None]] = []
    first, second = Recorder("first", log), Recorder("second", log)
    observe.subscribe(first)
    observe.subscribe(second)
    observe.read("replica1", None)
    observe.pin("write")
    assert log == [
        ("first", "replica1", None),
        ("second", "replica1", None),
        ("first", "pin", "write"),
        ("second", "pin", "write"),
    ]


def test_subscribing_twice_delivers_once_and_unsubscribe_is_harmless():
    log: list[tuple[str, str, str | None]] = []
    listener = Recorder("only", log)
    observe.subscribe(listener)
    observe.subscribe(listener)
    observe.read("default", "transaction")
    assert log == [("only", "default", "transaction")]
    observe.unsubscribe(listener)
    observe.unsubscribe(listener)
    observe.read("default", None)
    assert observe.listeners == () and len(log) == 1


def test_without_listeners_nothing_is_called():
    observe.read("replica1", None)  # no error, nothing to deliver to
    observe.pin("cookie")
    assert observe.listeners == ()
