"""
Blocking calls with a deadline: name lookups and cache calls of the monitor.

A call that cannot be interrupted (``getaddrinfo``, a cache client without a
socket timeout) runs in a daemon thread; the caller waits at most ``timeout``
seconds. While a call under one key has not returned, the next call under
that key fails at once instead of starting another thread, so a hung server
costs one thread, not one per round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["CallTimeout", "call_within", "reset_after_fork"]

_T = TypeVar("_T")

_busy: dict[str, threading.Thread] = {}
_lock = threading.Lock()


class CallTimeout(TimeoutError):
    """The call did not return in time (or an earlier one under its key is hung)."""


def call_within(key: str, timeout: float, func: Callable[[], _T]) -> _T:
    """Return ``func()``, or raise :class:`CallTimeout` after ``timeout`` seconds."""
    with _lock:
        earlier = _busy.get(key)
        if earlier is not None and earlier.is_alive():
            raise CallTimeout(f"{key}: an earlier call has not returned")
        outcome: list[_T] = []
        errors: list[BaseException] = []
        done = threading.Event()

        def run() -> None:
            try:
                outcome.append(func())
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=run, name=f"rwsplit-{key}"[:60], daemon=True)
        try:
            thread.start()
            started = True
            _busy[key] = thread
        except RuntimeError:  # interpreter shutting down: no new threads
            started = False
    if not started:
        return func()  # inline, outside the lock
    if not done.wait(timeout):
        raise CallTimeout(f"{key}: no answer in {timeout * 1000:.0f} ms")
    with _lock:
        if _busy.get(key) is thread:
            del _busy[key]
    if errors:
        raise errors[0]
    return outcome[0]


def reset_after_fork() -> None:
    """In a forked child: the parent's threads (and a held lock) are gone."""
    global _lock
    _lock = threading.Lock()
    _busy.clear()
