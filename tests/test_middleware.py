"""PinPrimaryMiddleware against the real cluster, through Django's test client."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from django.core import signing
from django.test import Client, override_settings

from django_rwsplit import consistency
from django_rwsplit.pinning import current_scope, is_pinned
from tests.utils import token_issued

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

TIME_MODE = {
    "REPLICAS": ["replica1", "replica2"],
    "ROUTE_TEST_MIRRORS_TO_PRIMARY": False,
    "CONSISTENCY": "time",
    "STICKY_SECONDS": 5.0,
}


@pytest.fixture
def replica_ports(ports):
    return {ports["replica1"], ports["replica2"]}


def test_get_reads_one_replica_for_the_whole_request(cluster, replica_ports):
    for _ in range(5):
        ports = Client().get("/read/").json()["ports"]
        assert set(ports) <= replica_ports
        assert len(set(ports)) == 1


def test_post_reads_primary_from_first_query(cluster, ports):
    body = Client().post("/post/", {}, content_type="application/json").json()
    assert body == {"first": ports["default"], "after": ports["default"]}


@override_settings(RWSPLIT={**TIME_MODE, "PIN_UNSAFE_METHODS": False})
def test_post_without_unsafe_pin_reads_replica_until_it_writes(
    cluster, ports, replica_ports
):
    body = Client().post("/post/", {}, content_type="application/json").json()
    assert body["first"] in replica_ports
    assert body["after"] == ports["default"]


@pytest.mark.parametrize("url", ["/write/", "/raw-write/"])
def test_get_that_writes_reads_primary_afterwards(cluster, ports, replica_ports, url):
    body = Client().get(url).json()
    assert body["before"] in replica_ports
    assert body["after"] == [ports["default"], ports["default"]]


@override_settings(RWSPLIT=TIME_MODE)
def test_cookie_pins_next_get_in_time_mode(cluster, ports):
    client = Client()
    response = client.get("/write/")
    morsel = response.cookies["rwsplit_pin"]
    assert morsel["httponly"] and morsel["samesite"] == "Lax"
    assert not morsel["secure"]
    assert int(morsel["max-age"]) == 5
    assert client.get("/read/").json()["ports"] == [ports["default"]] * 3


@override_settings(RWSPLIT=TIME_MODE)
def test_cookie_is_secure_on_https(cluster):
    response = Client().get("/write/", secure=True)
    assert response.cookies["rwsplit_pin"]["secure"]


@override_settings(RWSPLIT=TIME_MODE)
def test_cookie_stops_pinning_after_sticky_seconds(cluster, ports, replica_ports):
    client = Client()
    client.cookies = SimpleCookie({"rwsplit_pin": token_issued(3)})
    assert client.get("/read/").json()["ports"] == [ports["default"]] * 3
    client.cookies = SimpleCookie({"rwsplit_pin": token_issued(7)})
    assert set(client.get("/read/").json()["ports"]) <= replica_ports


@override_settings(RWSPLIT=TIME_MODE)
@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        "t:1abc:tampered",
        "x" * 5000,
        "\u00e9\u00e8:\x00:??",
        "t" + ":" * 3,
    ],
)
def test_bad_cookie_is_ignored(cluster, replica_ports, value):
    client = Client()
    client.cookies = SimpleCookie({"rwsplit_pin": value})
    response = client.get("/read/")
    assert response.status_code == 200
    assert set(response.json()["ports"]) <= replica_ports


@override_settings(RWSPLIT=TIME_MODE)
def test_tampered_signed_cookie_is_ignored(cluster, replica_ports):
    good = token_issued(0)
    payload, stamp, signature = good.split(":")
    for forged in (
        f"lsn:{stamp}:{signature}",
        f"{payload}:{stamp}:{signature[:-2]}xx",
        signing.TimestampSigner(key="not-our-secret", salt=consistency.SALT).sign("t"),
    ):
        client = Client()
        client.cookies = SimpleCookie({"rwsplit_pin": forged})
        assert set(client.get("/read/").json()["ports"]) <= replica_ports


def test_request_that_raised_leaves_no_state(cluster, replica_ports):
    client = Client(raise_request_exception=False)
    assert client.get("/fail/").status_code == 500
    assert current_scope() is None and not is_pinned()
    assert set(Client().get("/read/").json()["ports"]) <= replica_ports


def test_async_client_reads_replicas_and_pins_after_write(
    cluster, ports, replica_ports
):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    async def scenario() -> tuple[dict, dict]:
        client = AsyncClient()
        body = (await client.get("/async-read/")).json()
        write = (await client.get("/write/")).json()
        return body, write

    body, write = async_to_sync(scenario)()
    assert set(body["ports"]) <= replica_ports
    assert write["before"] in replica_ports
    assert write["after"] == [ports["default"]] * 2
