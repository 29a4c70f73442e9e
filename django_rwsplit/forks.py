"""
Fresh locks in a forked child (gunicorn forks its workers after loading the app).

A lock another thread held at the moment of ``fork()`` stays held for ever in
the child, where that thread does not exist. Objects (and modules) whose lock
is called ``_lock`` register with :func:`renew_after_fork`; the child gets a
new, free lock for each. State that lives with a thread (the health monitor,
the signal notifier) is reset by its own module instead.
"""

from __future__ import annotations

import threading
import weakref
from typing import TypeVar

__all__ = ["renew_after_fork", "renew_locks"]

_T = TypeVar("_T")
_owners: weakref.WeakSet[object] = weakref.WeakSet()


def renew_after_fork(owner: _T) -> _T:
    """Give ``owner`` a fresh ``_lock`` in every forked child; return ``owner``."""
    _owners.add(owner)
    return owner


def renew_locks() -> None:
    """In a forked child: replace every registered owner's ``_lock``."""
    for owner in list(_owners):
        owner._lock = threading.Lock()  # type: ignore[attr-defined]
