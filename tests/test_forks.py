"""A forked child gets free locks (forks): pure logic, a real fork(), no server."""

from __future__ import annotations

import os
import threading
import time

import pytest

from django_rwsplit import metrics, observe
from django_rwsplit.health.history import History
from django_rwsplit.task_scopes import RunningScopes


def lock_users() -> list[tuple[object, object]]:
    """(object holding ``_lock``, a call that takes it) for each registered kind."""
    counter = metrics.CountingObserver()
    history = History()
    scopes = RunningScopes()
    return [
        (counter, counter.totals),
        (history, lambda: history.record(None) or history.samples()),
        (scopes, lambda: scopes.leave("no such task")),
        (observe, lambda: observe.unsubscribe(object())),
        (metrics, metrics.uninstall),  # in the child only
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("index", range(5))
def test_a_lock_held_by_another_thread_at_fork_is_free_in_the_child(index):
    owner, take = lock_users()[index]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with owner._lock:  # type: ignore[attr-defined]
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: the holder thread does not exist here
        done = threading.Event()
        threading.Thread(target=lambda: (take(), done.set()), daemon=True).start()
        os._exit(0 if done.wait(5) else 1)
    release.set()
    holder.join(5)
    deadline = time.monotonic() + 15
    while True:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        assert time.monotonic() < deadline, "the child hung"
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0, "the child waited on a dead lock"
