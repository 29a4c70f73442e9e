"""
Read-your-writes outside any request: a thread, a script, a task without the
integration. Against replicas that apply WAL late but stay in rotation.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections
from django.test import override_settings

from django_rwsplit import pinning
from django_rwsplit.conf import get_config
from django_rwsplit.consistency import acurrent_token, current_token, decode
from tests.testapp.models import Item
from tests.utils import fast_health, start_health, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

APPLY_DELAY_MS = 800
WINDOW = 1.5  # STICKY_SECONDS: the unscoped pin's window in these tests


@pytest.fixture
def late_replicas(cluster):
    """Both replicas apply WAL 800 ms late: in rotation, never caught up at once."""
    for replica in cluster.replicas:
        cluster.set_apply_delay(replica, APPLY_DELAY_MS)
    with override_settings(RWSPLIT=fast_health(STICKY_SECONDS=WINDOW)):
        start_health()
        yield cluster


def create_then_get(count: int) -> int:
    """Write then read the row at once, outside any scope; return how many missed."""
    missed = 0
    for number in range(count):
        item = Item.objects.create(name=f"unscoped {number}")
        if not Item.objects.filter(pk=item.pk).exists():
            missed += 1
    return missed


def test_a_write_outside_any_scope_pins_the_contexts_reads(late_replicas):
    assert pinning.current_scope() is None
    assert create_then_get(50) == 0


def test_without_the_pin_the_same_reads_are_stale(late_replicas, monkeypatch):
    """Proof that the test above can fail: unscoped writes forgotten, as before."""
    monkeypatch.setattr(pinning, "note_write", lambda: None)
    assert create_then_get(20) > 10


def test_the_pin_ends_after_the_window_and_the_token_with_it(late_replicas):
    Item.objects.create(name="once")
    assert current_token() is not None
    reads_primary = Item.objects.all().db == "default"
    assert reads_primary
    wait_until(lambda: Item.objects.all().db != "default", timeout=WINDOW + 2)
    assert current_token() is None


def test_the_pin_is_the_writing_threads_only(late_replicas):
    Item.objects.create(name="main thread wrote")
    seen: list[str] = []

    def other() -> None:
        seen.append(Item.objects.all().db)
        connections.close_all()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert Item.objects.all().db == "default"
    assert seen and seen[0] != "default"


def test_current_token_in_async_code_fails_clearly_and_acurrent_token_works(
    late_replicas,
):
    Item.objects.create(name="before the event loop")
    expected = decode(current_token(), get_config())
    assert expected is not None and expected.lsn is not None

    async def inside_a_loop() -> str | None:
        with pytest.raises(SynchronousOnlyOperation, match="acurrent_token"):
            current_token()
        token = await acurrent_token()
        await sync_to_async(connections.close_all)()  # the same worker thread
        return token

    token = asyncio.run(inside_a_loop())
    decoded = decode(token, get_config())
    assert decoded is not None and decoded.lsn is not None
    assert decoded.lsn >= expected.lsn
