"""startup: a server or worker starts its health in AppConfig.ready()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from django_rwsplit.health import registry
from django_rwsplit.startup import serves

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["/srv/venv/bin/gunicorn", "shop.wsgi"],
        ["/usr/bin/uvicorn", "shop.asgi:application"],
        ["/srv/venv/lib/python3.12/site-packages/uvicorn/__main__.py"],
        ["celery", "-A", "shop", "worker"],
        ["uwsgi", "--ini", "shop.ini"],
        ["manage.py", "runserver", "--noreload"],
        ["./manage.py", "db_worker"],
    ],
)
def test_servers_and_workers_serve(argv):
    assert serves(argv, environ={})


@pytest.mark.parametrize(
    "argv",
    [
        ["manage.py", "migrate"],
        ["manage.py", "collectstatic", "--noinput"],
        ["manage.py", "test"],
        ["/usr/lib/python3/site-packages/django/__main__.py", "shell"],
        ["django-admin", "check"],
        ["/srv/venv/bin/pytest", "-x"],
        ["/srv/venv/bin/mypy", "shop"],
        ["script.py"],
        [],
    ],
)
def test_commands_tools_and_scripts_do_not(argv):
    assert not serves(argv, environ={})


def test_runserver_serves_in_its_reloaders_child_only():
    assert not serves(["manage.py", "runserver"], environ={})
    assert serves(["manage.py", "runserver"], environ={"RUN_MAIN": "true"})


def test_this_test_run_started_no_health_at_start_up():
    assert not registry.serving()


@pytest.mark.cluster
def test_a_server_runs_its_rounds_before_any_read_and_so_do_its_children(cluster):
    """The health starts in ready() and again in a forked worker, unasked."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["RWSPLIT_ROOT"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "startup" / "gunicorn")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for process in ("parent", "child"):
        seen = result[process]
        assert seen["running"], result
        assert seen["rounds"] >= 1, result
        assert "django_rwsplit-watchdog" in seen["threads"], result
        assert seen["reachable"] == ["replica1", "replica2"], result
