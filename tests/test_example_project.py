"""
The example project (``make demo``) against the suite's running cluster.

The example runs in subprocesses with its own settings (DATABASE_URL and
REPLICA_URLS point at the cluster), so this suite's Django settings are left
alone: ``manage.py check``, ``migrate`` and ``seed``, then ``runserver``,
driven over HTTP with urllib.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from django_rwsplit.testing.cluster import LocalCluster
from tests.chaos import servers
from tests.ports import free_port

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "rwsplit_example_test"
HEALTH_TOKEN = "example-test-token-0123456789"


def example_env(
    cluster: LocalCluster, primary_port: int | None = None
) -> dict[str, str]:
    def url(port: int) -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{DATABASE}"

    return {
        **os.environ,
        # pytest-django exported the suite's settings module; replace it.
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DATABASE_URL": url(primary_port or cluster.primary.port),
        "REPLICA_URLS": ",".join(url(r.port) for r in cluster.replicas),
        "DEBUG": "false",
        # Pins last long enough for a slow machine to follow a redirect.
        "RWSPLIT_STICKY_SECONDS": "30",
        "PYTHONUNBUFFERED": "1",
        "RWSPLIT_HEALTH_ENDPOINT_TOKEN": HEALTH_TOKEN,
    }


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (
        f"manage.py {' '.join(args)} failed ({done.returncode}):\n"
        f"{done.stdout}\n{done.stderr}"
    )
    return done.stdout


@dataclass
class Server(servers.Server):
    """The example project's runserver, and the cluster ports it reads from."""

    primary_port: int
    replica_ports: list[int]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Client:
    """A browser-ish urllib client: keeps cookies, does not follow redirects."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect()
        )

    def request(
        self,
        path: str,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(
            self.server.url + path, body, headers=headers or {}
        )
        try:
            with self.opener.open(request, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def json(self, path: str, data: dict[str, str] | None = None) -> Any:
        status, _, text = self.request(path, data)
        assert status in (200, 201), (
            f"{path}: {status} {text}\n{self.server.log_tail()}"
        )
        return json.loads(text)

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.cookies if c.name == name), None)


@pytest.fixture(scope="module")
def server(rwsplit_cluster: LocalCluster, tmp_path_factory: Any) -> Iterator[Server]:
    """The example project, migrated and seeded, served by runserver."""
    cluster = rwsplit_cluster
    cluster.execute(
        cluster.primary, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'
    )
    cluster.create_database(DATABASE)
    env = example_env(cluster)
    manage(env, "check")
    manage(env, "migrate", "--noinput", "-v", "0")
    seeded = manage(env, "seed", "--count", "5")
    assert "Seeded 5 products" in seeded
    assert "Created staff user 'demo'" in seeded
    cluster.wait_caught_up()

    port = free_port()
    log = tmp_path_factory.mktemp("example") / "runserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runserver",
                f"127.0.0.1:{port}",
                "--noreload",
                "--skip-checks",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    srv = Server(
        name="runserver",
        port=port,
        process=process,
        log=log,
        primary_port=cluster.primary.port,
        replica_ports=[r.port for r in cluster.replicas],
    )
    try:
        servers.wait_answering(srv)
        yield srv
    finally:
        srv.stop()


def wait_for_replica_reads(client: Client, timeout: float = 10.0) -> dict[str, Any]:
    """Poll /api/whoami/ until the replicas are in rotation (they start out)."""
    deadline = time.monotonic() + timeout
    while True:
        who: dict[str, Any] = client.json("/api/whoami/")
        served = set(who["servers"])
        if served and served <= set(client.server.replica_ports):
            return who
        if time.monotonic() > deadline:
            pytest.fail(f"reads never reached a replica: {who}")
        time.sleep(0.2)


def test_list_page_reads_from_a_replica(server: Server) -> None:
    client = Client(server)
    who = wait_for_replica_reads(client)
    assert who["pinned"] is None
    assert set(who["reads"]) <= {"replica1", "replica2"}

    status, _, page = client.request("/")
    assert status == 200, server.log_tail()
    assert "<h1>Products</h1>" in page
    assert "Red Kettle" in page  # seeded
    # The query table: every statement ran on a replica, none on the primary.
    assert 'class="on-replica"' in page
    assert 'class="on-primary"' not in page
    assert any(f"127.0.0.1:{port}" in page for port in server.replica_ports)
    assert "Not pinned" in page


def test_form_post_redirects_and_pins_the_client_to_the_primary(
    server: Server,
) -> None:
    client = Client(server)
    wait_for_replica_reads(client)
    status, _, page = client.request("/")
    assert status == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    product = re.search(r'name="product" value="(\d+)"', page)
    assert token and product, page

    status, headers, _ = client.request(
        "/orders/",
        {
            "csrfmiddlewaretoken": token[1],
            "product": product[1],
            "quantity": "1",
        },
    )
    assert status == 302, server.log_tail()
    location = headers["Location"]
    assert re.fullmatch(r"/orders/\d+/", location)
    assert client.cookie("rwsplit_pin"), "the write should set the pin cookie"

    # Post/Redirect/Get: the GET carries the pin cookie with the write's WAL
    # position (CONSISTENCY="lsn", the demo's default), so it reads from a
    # replica that has replayed it, or from the primary, and sees the order.
    status, _, page = client.request(location)
    assert status == 200, server.log_tail()
    assert f"Order #{location.split('/')[2]}" in page
    assert '<strong>CONSISTENCY="lsn" (running)</strong>' in page
    assert "Your pin cookie asks for a replica that has replayed WAL position" in page
    if "pinned to the primary" in page:
        assert "pinned to the primary: token" in page
        assert 'class="on-replica"' not in page
    else:
        assert 'class="on-primary"' not in page

    who = client.json("/api/whoami/")
    assert who["pinned"] in (None, "token")
    if who["pinned"] is None:
        assert set(who["servers"]) <= set(server.replica_ports)


def test_api_write_then_read_sees_the_row(server: Server) -> None:
    client = Client(server)
    wrote = client.json("/api/write/", {"text": "hello"})
    assert wrote["port"] == server.primary_port
    assert wrote["alias"] == "default"
    assert client.cookie("rwsplit_pin")

    read = client.json(f"/api/read/{wrote['id']}/")
    assert read["visible"] is True
    assert read["pinned"] in (None, "token")  # a caught-up replica, or the primary

    # Another client, without the cookie, reads from a replica; streaming
    # replication shows it the row shortly.
    stranger = Client(server)
    wait_for_replica_reads(stranger)
    deadline = time.monotonic() + 5
    while True:
        read = stranger.json(f"/api/read/{wrote['id']}/")
        assert read["pinned"] is None
        assert read["port"] in server.replica_ports
        if read["visible"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert read["visible"] is True


def test_status_page_and_health_document_are_mounted(server: Server) -> None:
    client = Client(server)
    bearer = {"Authorization": f"Bearer {HEALTH_TOKEN}"}
    status, _, text = client.request("/rwsplit/health/", headers=bearer)
    assert status == 200, text
    assert json.loads(text)["status"] in ("ok", "degraded")
    assert client.request("/rwsplit/health/")[0] == 403  # no token, no staff

    status, headers, _ = client.request("/rwsplit/status/")
    assert status == 302
    assert headers["Location"].startswith("/admin/login/")

    # The demo's staff login, as printed by make demo.
    _, _, page = client.request("/admin/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf, page
    status, _, _ = client.request(
        "/admin/login/?next=/rwsplit/status/",
        {
            "csrfmiddlewaretoken": csrf[1],
            "username": "demo",
            "password": "demo",
            "next": "/rwsplit/status/",
        },
    )
    assert status == 302, server.log_tail()
    status, _, page = client.request("/rwsplit/status/")
    assert status == 200, server.log_tail()
    assert "replica1" in page


def test_unreachable_primary_answers_503(rwsplit_cluster: LocalCluster) -> None:
    """A write while the primary cannot be reached is a 503, not a 500."""
    env = example_env(rwsplit_cluster, primary_port=free_port(range(19500, 20000)))
    script = (
        "import django, json; django.setup()\n"
        "from django.test import Client\n"
        "r = Client().post('/api/write/', HTTP_HOST='127.0.0.1')\n"
        "print(json.dumps({'status': r.status_code, 'body': r.json(),"
        " 'retry': r.get('Retry-After')}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 503
    assert result["body"]["error"] == "database_unavailable"
    assert result["retry"] == "5"
