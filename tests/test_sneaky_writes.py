"""
Raw writes on the primary's connection pin the rest of the request (issue 22).

Each statement here fooled the old classifier (quotes inside comments,
dollar quotes, ``E''`` strings, nested comments), or passed no execute
wrapper at all (psycopg's ``cursor.copy()``), or took row locks in a safe
view under ``ATOMIC_REQUESTS``. With replay paused on both replicas, a read
that left the primary after such a write would miss its row.
"""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from tests.testapp.models import Item
from tests.utils import fast_health, start_health

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

# Paused replicas stay in rotation for the test's few seconds.
LAGGING_OK = fast_health(MAX_LAG_SECONDS=60.0, BALANCER="round_robin")
CASES = [
    "quote_in_comment",
    "quote_in_line_comment",
    "dollar_quote",
    "escape_string",
    "nested_comment",
    "copy",
]


@override_settings(RWSPLIT=LAGGING_OK)
@pytest.mark.parametrize("case", CASES)
def test_a_raw_write_pins_the_request(case, replay_paused):
    response = Client().get(f"/sneaky-write/{case}/", {"name": f"sneaky-{case}"})
    assert response.status_code == 200
    assert response.json() == {"alias": "default", "found": 1}


@override_settings(RWSPLIT=LAGGING_OK)
def test_a_row_lock_in_a_safe_atomic_view_keeps_reads_in_its_transaction(
    cluster, atomic_requests
):
    Item.objects.create(name="locked")
    cluster.wait_caught_up(timeout=60)
    start_health()
    response = Client().get("/sneaky-write/lock/", {"name": "locked"})
    assert response.status_code == 200
    # After FOR UPDATE the view's reads stay in the locking transaction.
    assert response.json()["alias"] == "default"
