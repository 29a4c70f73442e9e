"""Django tasks (django.tasks, Django 6.0+) and a backend for the task tests."""

from __future__ import annotations

import threading

from django.db import connections
from django.tasks import task
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskResult, TaskResultStatus
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.crypto import get_random_string

from django_rwsplit.contrib.django_tasks import reads


class ThreadBackend(BaseTaskBackend):
    """
    Enqueues in the caller, runs each task at once in a new thread.

    As a worker would: the task starts in a fresh context, not the caller's
    (Django's ImmediateBackend runs it in the caller's own context).
    """

    def enqueue(self, task, args, kwargs):  # type: ignore[no-untyped-def]
        self.validate_task(task)
        result = TaskResult(
            task=task,
            id=get_random_string(32),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        worker = threading.Thread(target=self.run, args=(result,))
        worker.start()
        worker.join()
        return result

    def run(self, result):  # type: ignore[no-untyped-def]
        try:
            object.__setattr__(result, "status", TaskResultStatus.RUNNING)
            object.__setattr__(result, "started_at", timezone.now())
            task_started.send(type(self), task_result=result)
            value = result.task.call(*result.args, **result.kwargs)
            object.__setattr__(result, "_return_value", value)
            object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
            object.__setattr__(result, "finished_at", timezone.now())
            task_finished.send(type(self), task_result=result)
        finally:
            connections.close_all()


@task
def find_item(pk: int) -> dict[str, object]:
    from tests.testapp.models import Item

    items = Item.objects.filter(pk=pk)
    return {"found": items.exists(), "db": str(items.db)}


@task
def write_then_read(name: str) -> dict[str, object]:
    from tests.testapp.models import Item

    item = Item.objects.create(name=name)
    items = Item.objects.filter(pk=item.pk)
    return {"found": items.exists(), "db": str(items.db)}


@task
@reads("primary")
def where_reads_go_on_primary() -> str:
    from tests.testapp.models import Item

    return str(Item.objects.all().db)


@task
def where_reads_go() -> str:
    from tests.testapp.models import Item

    return str(Item.objects.all().db)
