"""
Send the health signals from their own thread, so a receiver never stalls checks.

The monitor (and a request that finds a replica unreachable) hands each
transition to :func:`send`; one daemon thread delivers them in order. A
receiver that blocks delays later signals, never a health round. Tests call
:func:`flush` to wait until everything handed over has been delivered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from django.dispatch import Signal

from django_rwsplit import signals

__all__ = ["flush", "reset_after_fork", "send"]

logger = logging.getLogger("django_rwsplit")

_Item = tuple[Signal, object, dict[str, Any]]
_queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_lock = threading.Lock()
_pending = 0
_SLOW_RECEIVER_SECONDS = 1.0


def send(signal: Signal, sender: object, **kwargs: Any) -> None:
    """Deliver ``signal`` to its receivers soon, from the notifier thread."""
    global _pending
    with _lock:
        _pending += 1
        _queue.put((signal, sender, kwargs))
        _ensure_thread()


def _ensure_thread() -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    thread = threading.Thread(
        target=_deliver, name="django_rwsplit-notify", daemon=True
    )
    try:
        thread.start()
    except RuntimeError:  # interpreter exiting: nobody is left to tell
        return
    _thread = thread


def _deliver() -> None:
    global _pending
    while True:
        signal, sender, kwargs = _queue.get()
        started = time.monotonic()
        try:
            signals.send_robust(signal, sender=sender, **kwargs)
        finally:
            with _lock:
                _pending -= 1
        took = time.monotonic() - started
        if took > _SLOW_RECEIVER_SECONDS:
            logger.warning(
                "django_rwsplit signal receivers took %.1f s; they delay later "
                "signals (never health checks).",
                took,
            )


def flush(timeout: float = 5.0) -> bool:
    """Wait until every signal sent so far was delivered; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with _lock:
            if _pending == 0:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def reset_after_fork() -> None:
    """In a forked child: the parent's notifier thread and its queue are gone."""
    global _queue, _thread, _lock, _pending
    _queue = queue.SimpleQueue()
    _thread = None
    _lock = threading.Lock()
    _pending = 0
