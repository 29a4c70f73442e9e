"""
API clients without cookies: the token in a response header, sent back in a
request header. Against replicas that apply WAL late (in rotation).
"""

from __future__ import annotations

import pytest
from django.core import signing
from django.test import Client, override_settings

from django_rwsplit import consistency
from tests.utils import fast_health, token_issued

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

HEADER = "X-RWSplit-Token"
CYCLES = 200


class CookielessClient(Client):
    """A client with no cookie jar: every request starts without cookies."""

    def request(self, **request):  # type: ignore[no-untyped-def]
        self.cookies.clear()
        return super().request(**request)


@pytest.fixture
def late_replicas(cluster):
    for replica in cluster.replicas:
        cluster.set_apply_delay(replica, 800)
    with override_settings(RWSPLIT=fast_health()):
        yield cluster


def write_then_read(client: Client, echo: bool) -> bool:
    """Create a row, then read it in the next request; return whether it was seen."""
    created = client.get("/create/")
    assert created.status_code == 200
    headers = {}
    if echo:
        assert not created.cookies or "rwsplit_pin" in created.cookies
        headers = {HEADER: created.headers[HEADER]}
    seen = client.get(f"/item/{created.json()['id']}/", headers=headers)
    return bool(seen.json()["visible"])


def test_a_client_that_echoes_the_header_reads_its_writes(late_replicas):
    client = CookielessClient()
    stale = sum(not write_then_read(client, echo=True) for _ in range(CYCLES))
    assert stale == 0


def test_without_the_header_the_same_client_reads_stale_rows(late_replicas):
    """Proof that the test above can fail."""
    client = CookielessClient()
    stale = sum(not write_then_read(client, echo=False) for _ in range(40))
    assert stale > 20


def test_the_header_and_the_cookie_carry_the_same_token(late_replicas):
    response = Client().get("/create/")
    assert response.headers[HEADER] == response.cookies["rwsplit_pin"].value


def test_a_response_to_a_request_that_did_not_write_has_no_token(late_replicas):
    assert HEADER not in Client().get("/read/").headers


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        "x" * 5000,
        signing.TimestampSigner(salt="other").sign("0/FFFFFFFF"),
        "expired",
    ],
)
def test_a_forged_expired_or_garbage_header_is_ignored(late_replicas, value, ports):
    if value == "expired":
        value = token_issued(seconds_ago=60, lsn=1)
    body = CookielessClient().get("/read/", headers={HEADER: value}).json()
    assert ports["default"] not in body["ports"]


def test_a_genuine_time_token_in_the_header_pins_to_the_primary(cluster, ports):
    settings = fast_health(CONSISTENCY="time")
    with override_settings(RWSPLIT=settings):
        body = (
            CookielessClient()
            .get("/read/", headers={HEADER: consistency.encode(None)})
            .json()
        )
    assert body["ports"] == [ports["default"]] * 3


def test_the_header_names_are_settings(cluster, ports):
    settings = fast_health(
        CONSISTENCY="time",
        RESPONSE_TOKEN_HEADER="X-Pin-Out",
        REQUEST_TOKEN_HEADER="X-Pin-In",
    )
    with override_settings(RWSPLIT=settings):
        response = Client().get("/create/")
        assert "X-Pin-Out" in response.headers and HEADER not in response.headers
        token = response.headers["X-Pin-Out"]
        pinned = CookielessClient().get("/read/", headers={"X-Pin-In": token})
        ignored = CookielessClient().get("/read/", headers={HEADER: token})
    assert pinned.json()["ports"] == [ports["default"]] * 3
    assert ports["default"] not in ignored.json()["ports"]
