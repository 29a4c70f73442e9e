"""
Read-your-writes for Django's own tasks (django.tasks, Django 6.0 and later),
each run in a new thread as a worker would, against late-applying replicas.
"""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import override_settings

pytest.importorskip("django.tasks")

from django_rwsplit import pinning  # noqa: E402
from django_rwsplit.contrib.django_tasks import receivers  # noqa: E402
from tests import django_tasks_app as tasks  # noqa: E402
from tests.testapp.models import Item  # noqa: E402
from tests.utils import fast_health, start_health  # noqa: E402

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

TASKS = 100


@pytest.fixture
def late_replicas(cluster):
    for replica in cluster.replicas:
        cluster.set_apply_delay(replica, 2000)
    with override_settings(RWSPLIT=fast_health()):
        start_health()
        yield cluster


def enqueue_after_writes(count: int) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for number in range(count):
        if number % 2:
            with transaction.atomic():
                item = Item.objects.create(name=f"on_commit {number}")
                transaction.on_commit(
                    lambda pk=item.pk: found.append(
                        tasks.find_item.enqueue(pk).return_value
                    )
                )
        else:
            item = Item.objects.create(name=f"direct {number}")
            found.append(tasks.find_item.enqueue(item.pk).return_value)
    return found


def test_tasks_enqueued_right_after_a_write_find_their_row(late_replicas):
    done = enqueue_after_writes(TASKS)
    assert len(done) == TASKS
    assert [d for d in done if not d["found"]] == []

    pinning.forget_unscoped_write()
    assert tasks.where_reads_go.enqueue().return_value != "default"
    wrote = tasks.write_then_read.enqueue("in the task").return_value
    assert wrote == {"found": True, "db": "default"}
    assert tasks.where_reads_go.enqueue().return_value != "default"
    assert tasks.where_reads_go_on_primary.enqueue().return_value == "default"


def test_without_the_integration_the_same_tasks_miss_their_row(late_replicas):
    """Proof that the test above can fail."""
    receivers.disconnect()
    try:
        done = enqueue_after_writes(40)
    finally:
        receivers.connect()
    assert [d for d in done if not d["found"]]  # the assertion above, failing
