"""
The process's routing and health state, and the one way to start it afresh.

Health state (the monitor and its rounds), the read planners that hold it
and load measurements live per process. :func:`reset` forgets them all:
when a setting they depend on changes (Django's ``setting_changed``) and
between tests. :func:`reset_after_fork`
does the same in a forked child (gunicorn's workers), after giving every
registered lock a fresh one, since the parent's threads are not there.
"""

from __future__ import annotations

from django_rwsplit import forks, planner
from django_rwsplit.health import load, nodes
from django_rwsplit.health import state as health_state

__all__ = ["reset", "reset_after_fork"]


def reset() -> None:
    """Stop the health monitor and forget every measurement of this process."""
    planner.reset()
    health_state.reset()
    load.reset()
    nodes.forget_found()


def reset_after_fork() -> None:
    """In a forked child: fresh locks, no inherited monitor, no measurements."""
    forks.renew_locks()
    planner.reset()
    health_state.reset_after_fork()
    load.reset()
    nodes.forget_found()
