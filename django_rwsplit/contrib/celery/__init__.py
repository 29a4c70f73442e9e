"""
Read-your-writes for Celery tasks: add ``"django_rwsplit.contrib.celery"`` to
``INSTALLED_APPS`` (``pip install django-rwsplit[celery]``).

A task published by a context that wrote (a request, another task, a script,
also from ``transaction.on_commit()``) carries that context's token in the
``rwsplit_token`` message header. The worker runs each task in its own
routing scope: reads go to replicas that have replayed the token's position,
else to the primary; the task's own writes pin its later reads; nothing
carries over to the next task. Choose per task with the ``rwsplit_reads``
option: ``"after_publisher"`` (the default), ``"primary"`` or ``"replicas"``::

    @app.task(rwsplit_reads="primary")
    def reconcile(): ...
"""

from __future__ import annotations

from django_rwsplit.task_scopes import AFTER_PUBLISHER, POLICIES, PRIMARY, REPLICAS

__all__ = ["AFTER_PUBLISHER", "HEADER", "OPTION", "POLICIES", "PRIMARY", "REPLICAS"]

HEADER = "rwsplit_token"
OPTION = "rwsplit_reads"
