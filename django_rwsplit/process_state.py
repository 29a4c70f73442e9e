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

from django_rwsplit import conf, forks, planner
from django_rwsplit.health import load, nodes
from django_rwsplit.health import registry as health_registry

__all__ = ["reset", "reset_after_fork"]


def reset() -> None:
    """Stop the health monitor and forget every measurement of this process."""
    planner.reset()
    health_registry.reset()
    load.reset()
    nodes.forget_found()


def reset_after_fork() -> None:
    """
    In a forked child: fresh locks, no inherited monitor, no measurements.

    The child of a serving process (gunicorn's workers, Celery's pool) starts
    its own health rounds at once, as its parent did in ``AppConfig.ready()``.
    """
    forks.renew_locks()
    planner.reset()
    health_registry.reset_after_fork()
    load.reset()
    nodes.forget_found()
    if health_registry.serving():
        health_registry.start_serving(conf.get_config())
