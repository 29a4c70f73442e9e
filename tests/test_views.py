"""The health endpoint and status page: access rules, JSON shape, status codes."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import include, path

from django_rwsplit import conf
from django_rwsplit.health import history
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.probes import PrimaryStatus
from django_rwsplit.health.tracker import HealthSnapshot, ReplicaStatus
from django_rwsplit.management.commands.replica_health import as_json
from tests.testapp.models import Item
from tests.utils import fast_health, rotation, start_health, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]


def _fake_admin_login(request):
    return HttpResponse("login")


urlpatterns = [
    path("rwsplit/", include("django_rwsplit.urls")),
    path(
        "admin/",
        include(([path("login/", _fake_admin_login, name="login")], "admin")),
    ),
]
URLS = __name__

FAST = fast_health()
TOKEN = "s3cret-token-ü-0123456789"
AUTH_MIDDLEWARE = [
    "django_rwsplit.middleware.PinPrimaryMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.common.CommonMiddleware",
]


@contextmanager
def endpoint_settings(**rwsplit: Any):
    """``override_settings(RWSPLIT=FAST + rwsplit, ROOT_URLCONF=this module)``."""
    with override_settings(RWSPLIT={**FAST, **rwsplit}, ROOT_URLCONF=URLS):
        yield conf.get_config()
    history.clear()


def replica_error(alias: str) -> str:
    snapshot = health_registry.snapshot()
    status = snapshot.replica(alias) if snapshot else None
    return (status.error if status else None) or ""


def staff_client(cluster, **flags: bool) -> Client:
    """A client logged in as a user with ``flags`` (is_staff, is_active)."""
    user = User.objects.create_user("someone", password="pw")
    for flag, value in flags.items():
        setattr(user, flag, value)
    user.save()
    client = Client()
    client.force_login(user)
    cluster.wait_caught_up()  # the session and user are read from a replica
    return client


# -- access ----------------------------------------------------------------------


def test_off_by_default(cluster):
    with endpoint_settings():
        client = Client()
        assert client.get("/rwsplit/health/").status_code == 404
        assert client.get("/rwsplit/status/data/").status_code == 404
        # A token presented while none is configured does not help.
        assert client.get("/rwsplit/health/?token=x").status_code == 404
        page = client.get("/rwsplit/status/")
        assert page.status_code == 302
        assert page["Location"] == "/admin/login/?next=%2Frwsplit%2Fstatus%2F"


def test_token_required_when_configured(cluster):
    with endpoint_settings(HEALTH_ENDPOINT_TOKEN=TOKEN):
        client = Client()
        for response in (
            client.get("/rwsplit/health/"),
            client.get("/rwsplit/health/", headers={"Authorization": "Bearer nope"}),
            client.get("/rwsplit/health/", {"token": TOKEN[:-1]}),
            client.get("/rwsplit/health/", headers={"Authorization": TOKEN}),
            client.get("/rwsplit/status/data/"),
            client.get("/rwsplit/status/", {"token": "nope"}),
        ):
            assert response.status_code == 403
            assert "no-store" in response["Cache-Control"]
        for response in (
            client.get(
                "/rwsplit/health/", headers={"Authorization": f"Bearer {TOKEN}"}
            ),
            client.get(
                "/rwsplit/health/", headers={"Authorization": f"bearer {TOKEN}"}
            ),
            client.get("/rwsplit/health/", {"token": TOKEN}),
        ):
            assert response.status_code == 200, response.content
            assert response["Cache-Control"].count("no-store") == 1
            assert response.json()["status"] == "ok"
        # Anonymous and without a token, the page still points at the login.
        assert client.get("/rwsplit/status/").status_code == 302
        assert client.post("/rwsplit/health/", {"token": TOKEN}).status_code == 405


@override_settings(MIDDLEWARE=AUTH_MIDDLEWARE)
def test_active_staff_user_needs_no_token(cluster):
    with endpoint_settings(HEALTH_ENDPOINT_TOKEN=TOKEN):
        client = staff_client(cluster, is_staff=True)
        assert client.get("/rwsplit/health/").status_code == 200
        assert client.get("/rwsplit/status/data/").status_code == 200
        page = client.get("/rwsplit/status/")
        assert page.status_code == 200
        assert page["Content-Type"].startswith("text/html")
    with endpoint_settings():
        assert client.get("/rwsplit/health/").status_code == 200


@override_settings(MIDDLEWARE=AUTH_MIDDLEWARE)
@pytest.mark.parametrize("flags", [{}, {"is_staff": True, "is_active": False}])
def test_other_users_are_turned_away(cluster, flags):
    with endpoint_settings():
        client = staff_client(cluster, **flags)
        assert client.get("/rwsplit/health/").status_code == 404
        assert client.get("/rwsplit/status/data/").status_code == 404
        # Logged in but not staff: no redirect loop through the login page.
        expected = 403 if flags.get("is_active", True) else 302
        assert client.get("/rwsplit/status/").status_code == expected


@override_settings(MIDDLEWARE=["django.middleware.common.CommonMiddleware"])
def test_misconfigured_rwsplit_reveals_nothing(cluster):
    with override_settings(RWSPLIT={"REPLICAS": "oops"}, ROOT_URLCONF=URLS):
        assert Client().get("/rwsplit/health/", {"token": "x"}).status_code == 404
        assert Client().get("/rwsplit/status/data/").status_code == 404


def test_misconfigured_rwsplit_is_critical_for_staff(rf):
    from types import SimpleNamespace

    from django_rwsplit import views

    request = rf.get("/rwsplit/health/")
    request.user = SimpleNamespace(is_authenticated=True, is_active=True, is_staff=True)
    with override_settings(RWSPLIT={"REPLICAS": "oops"}):
        response = views.health(request)
    assert response.status_code == 503
    assert json.loads(response.content)["status"] == "critical"


# -- content ---------------------------------------------------------------------


def test_health_json_has_the_replica_health_shape_without_hosts(cluster):
    with endpoint_settings(HEALTH_ENDPOINT_TOKEN=TOKEN):
        start_health()
        response = Client().get("/rwsplit/health/", {"token": TOKEN})
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        document = response.json()
        snapshot = health_registry.snapshot()
        assert snapshot is not None
        expected = as_json(snapshot)
        assert document.keys() == expected.keys()
        assert document["status"] == "ok"
        assert [r["alias"] for r in document["replicas"]] == ["replica1", "replica2"]
        assert "endpoint" not in document["primary"]
        for replica in document["replicas"]:
            assert "endpoint" not in replica
            assert replica["in_rotation"] is True
            assert replica.keys() <= expected["replicas"][0].keys()
        assert "127.0.0.1" not in response.content.decode()
        assert str(cluster.primary.port) not in response.content.decode()


@pytest.mark.parametrize("show", [False, True])
def test_status_codes_and_redacted_errors(cluster, show):
    with endpoint_settings(
        HEALTH_ENDPOINT_TOKEN=TOKEN, HEALTH_ENDPOINT_SHOW_HOSTS=show
    ):
        start_health()
        client = Client(headers={"Authorization": f"Bearer {TOKEN}"})
        cluster.stop_replica("replica1")
        wait_until(lambda: "replica1" not in rotation(), timeout=5)
        wait_until(lambda: replica_error("replica1").startswith("unreachable"), 5)
        response = client.get("/rwsplit/health/")
        assert response.status_code == 200
        document = response.json()
        assert document["status"] == "warning"
        replica1 = document["replicas"][0]
        assert replica1["in_rotation"] is False
        assert replica1["error"].startswith("unreachable")
        body = response.content.decode()
        port = str(cluster.replicas[0].port)
        if show:
            assert replica1["endpoint"] == f"127.0.0.1:{port}"
        else:
            assert "127.0.0.1" not in body and port not in body
            assert "<hidden>" in replica1["error"]

        if show:
            return
        cluster.stop_replica("replica2")
        wait_until(lambda: not rotation(), timeout=5)
        response = client.get("/rwsplit/health/")
        assert response.status_code == 503
        assert response.json()["status"] == "critical"
        assert "no-store" in response["Cache-Control"]
        data = client.get("/rwsplit/status/data/").json()
        assert data["health"]["status"] == "critical"
        assert data["summary"].startswith("no replica in rotation")
        assert "127.0.0.1" not in json.dumps(data)


def test_status_page_and_data(cluster):
    with endpoint_settings(HEALTH_ENDPOINT_TOKEN=TOKEN, MAX_LAG_SECONDS=2.5):
        start_health()
        client = Client()
        page = client.get("/rwsplit/status/", {"token": TOKEN})
        assert page.status_code == 200
        html = page.content.decode()
        assert 'id="rwsplit-initial"' in html
        assert 'var DATA_URL = "/rwsplit/status/data/"' in html
        assert "<svg" not in html  # drawn by the page's script, no CDN
        assert "https://" not in html and "http://cdn" not in html
        wait_until(
            lambda: (
                len(
                    client.get("/rwsplit/status/data/", {"token": TOKEN}).json()[
                        "history"
                    ]
                )
                >= 4
            ),
            timeout=5,
            interval=0.25,
        )
        data = client.get("/rwsplit/status/data/", {"token": TOKEN}).json()
        assert data["max_lag_seconds"] == 2.5
        assert data["refresh_seconds"] == 1.0
        assert data["window_seconds"] == 300
        assert {s["alias"] for s in data["history"]} == {"replica1", "replica2"}
        sample = data["history"][-1]
        assert sample.keys() == {
            "t",
            "alias",
            "lag_seconds",
            "in_rotation",
            "queries",
            "latency_ms",
        }
        assert set(data["reads"]) <= {"replica1", "replica2"}
        assert sample["t"] <= data["now"]


@override_settings(
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
        }
    ]
)
def test_status_page_through_the_project_template_engine(cluster):
    with endpoint_settings(HEALTH_ENDPOINT_TOKEN=TOKEN):
        page = Client().get("/rwsplit/status/", {"token": TOKEN})
        assert page.status_code == 200
        assert page.templates[0].name == "django_rwsplit/status.html"


# -- history ---------------------------------------------------------------------


def _snapshot(at: float, lag: float | None, in_rotation: bool) -> HealthSnapshot:
    primary = PrimaryStatus(
        alias="default",
        endpoint="h:1",
        reachable=True,
        in_recovery=False,
        current_lsn=100,
        checked_at=at,
    )
    replica = ReplicaStatus(
        "replica1", "h:2", in_rotation, lag_seconds=lag, checked_at=at + 0.01
    )
    return HealthSnapshot(primary, (replica,))


def test_history_keeps_each_round_once_within_the_window():
    import time

    ring = history.History(max_rounds=3)
    now = time.time()
    assert not ring.record(None)
    assert not ring.record(HealthSnapshot(None, ()))
    assert ring.record(_snapshot(now - 400, 1.0, True))  # older than the window
    assert ring.record(_snapshot(now - 2, 0.5, True))
    assert not ring.record(_snapshot(now - 2, 0.5, True))  # the same round
    assert not ring.record(_snapshot(now - 3, 0.5, True))  # an older one
    assert ring.record(_snapshot(now - 1, None, False))
    samples = ring.samples()
    assert [(s.lag_seconds, s.in_rotation) for s in samples] == [
        (0.5, True),
        (None, False),
    ]
    assert samples[0].as_dict()["alias"] == "replica1"
    for offset in range(3):
        ring.record(_snapshot(now + offset, 0.0, True))
    assert len(ring.samples(seconds=1000)) == 3  # max_rounds
    ring.clear()
    assert ring.samples() == []


def test_status_data_shows_each_replicas_share_of_reads(cluster):
    """The share and latency of this process's queries over the chart's window."""
    with endpoint_settings(HEALTH_ENDPOINT_TOKEN=TOKEN, BALANCER="round_robin"):
        state = start_health()
        client = Client()
        client.get("/rwsplit/status/data/", {"token": TOKEN})  # a first round kept
        for _ in range(40):
            Item.objects.exists()  # outside a request: alternates the replicas

        def both_counted():
            before = state.tracker.primary
            wait_until(lambda: state.tracker.primary is not before, 5)
            data = client.get("/rwsplit/status/data/", {"token": TOKEN}).json()
            reads = data["reads"]
            return {"replica1", "replica2"} <= set(reads) and all(
                reads[a]["queries"] >= 20 for a in ("replica1", "replica2")
            )

        wait_until(both_counted, timeout=10, interval=0)
        reads = client.get("/rwsplit/status/data/", {"token": TOKEN}).json()["reads"]
    assert reads["replica1"]["share"] + reads["replica2"]["share"] == pytest.approx(1)
    assert 0.4 <= reads["replica1"]["share"] <= 0.6
    assert all(reads[a]["latency_ms"] > 0 for a in ("replica1", "replica2"))
