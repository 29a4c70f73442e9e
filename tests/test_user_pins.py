"""
Per-user read-your-writes (USER_PIN_CACHE on Redis): a second client of the
same user, authenticated by a token in the view and keeping no cookies,
reads the first client's write. Against replicas applying WAL 2 s late.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.test import Client, override_settings

from tests.test_token_header import CookielessClient
from tests.utils import fast_health

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

CYCLES = 50


@pytest.fixture
def users_on_late_replicas(cluster):
    User.objects.create(username="alice")
    User.objects.create(username="bob")
    cluster.wait_caught_up(timeout=30)  # the users are on every replica
    for replica in cluster.replicas:
        cluster.set_apply_delay(replica, 2000)
    yield cluster
    caches["redis"].clear()


def stale_reads(writer: Client, reader: Client, reader_user: str, cycles: int) -> int:
    stale = 0
    for _ in range(cycles):
        created = writer.get("/api/create/", headers={"Authorization": "Token alice"})
        assert created.status_code == 200
        seen = reader.get(
            f"/api/item/{created.json()['id']}/",
            headers={"Authorization": f"Token {reader_user}"},
        )
        assert seen.status_code == 200
        stale += not seen.json()["visible"]
    return stale


def test_another_client_of_the_same_user_reads_the_users_writes(
    users_on_late_replicas,
):
    with override_settings(RWSPLIT=fast_health(USER_PIN_CACHE="redis")):
        stale = stale_reads(CookielessClient(), CookielessClient(), "alice", CYCLES)
    assert stale == 0


def test_without_user_pins_the_second_client_reads_stale_rows(users_on_late_replicas):
    """Proof that the test above can fail."""
    with override_settings(RWSPLIT=fast_health()):
        stale = stale_reads(CookielessClient(), CookielessClient(), "alice", 20)
    assert stale


def test_another_user_is_not_pinned_by_the_users_writes(users_on_late_replicas):
    with override_settings(RWSPLIT=fast_health(USER_PIN_CACHE="redis")):
        stale = stale_reads(CookielessClient(), CookielessClient(), "bob", 20)
    assert stale


def test_a_garbage_pin_in_the_cache_is_ignored(users_on_late_replicas, ports):
    alice = User.objects.get(username="alice")
    caches["redis"].set(f"rwsplit:user-pin:v1:{alice.pk}", "garbage", 30)
    with override_settings(RWSPLIT=fast_health(USER_PIN_CACHE="redis")):
        response = CookielessClient().get(
            "/api/item/1/", headers={"Authorization": "Token alice"}
        )
    assert response.status_code == 200
    assert response.json()["port"] != ports["default"]
