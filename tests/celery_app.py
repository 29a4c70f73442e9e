"""
The Celery app of the suite's task tests, for the worker and the publisher.

The worker runs ``celery -A tests.celery_app worker`` with the environment
the tests give it (the cluster's port, the test database's name, the queue).
"""

from __future__ import annotations

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

BROKER = os.environ.get("RWSPLIT_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")

app = Celery("rwsplit_tests", broker=BROKER, backend="rpc://")
app.conf.update(
    task_default_queue=os.environ.get("RWSPLIT_CELERY_QUEUE", "rwsplit-tests"),
    worker_prefetch_multiplier=8,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)


def _served_by(queryset) -> str:
    """Where a read of ``queryset`` goes in the task's scope."""
    return str(queryset.db)


@app.task
def ping() -> str:
    return "pong"


@app.task
def find_item(pk: int) -> dict[str, object]:
    """Read the row the publisher wrote just before enqueueing this task."""
    from tests.testapp.models import Item

    items = Item.objects.filter(pk=pk)
    return {"found": items.exists(), "db": _served_by(items)}


@app.task
def where_reads_go() -> str:
    from tests.testapp.models import Item

    return _served_by(Item.objects.all())


@app.task
def write_then_read(name: str) -> dict[str, object]:
    from tests.testapp.models import Item

    item = Item.objects.create(name=name)
    items = Item.objects.filter(pk=item.pk)
    return {"found": items.exists(), "db": _served_by(items)}


@app.task(rwsplit_reads="primary")
def find_item_on_primary(pk: int) -> dict[str, object]:
    return find_item(pk)


@app.task(rwsplit_reads="replicas")
def find_item_on_replicas(pk: int) -> dict[str, object]:
    return find_item(pk)
