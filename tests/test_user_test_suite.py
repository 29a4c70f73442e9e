"""
A user's own tests keep passing after they add django-rwsplit.

The project in tests/userproject configures its replicas as test mirrors,
as the README tells users to, and runs plain Django and pytest-django tests
that write and then read through the router. They run in subprocesses
against the real cluster, with ``manage.py test`` and with pytest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

PROJECT = Path(__file__).parent / "userproject"


def run(cluster, *args: str, disable_mirror_routing: bool = False):
    env = {
        **os.environ,
        "RWSPLIT_CLUSTER_PORT": str(cluster.primary.port),
        "PYTHONPATH": str(PROJECT),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if disable_mirror_routing:
        env["USERPROJECT_DISABLE_MIRROR_ROUTING"] = "1"
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_manage_py_test_passes(rwsplit_cluster):
    result = run(rwsplit_cluster, "manage.py", "test", "notes", "--noinput", "-v", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ran 5 tests" in result.stderr


RUNS = 10


@pytest.mark.long
def test_manage_py_test_passes_every_time_while_replicas_replay_late(cluster):
    """
    Issue 22: the runner's database checks ran before the replicas had
    replayed the new test database, and failed the run (rwsplit.E021) in 4
    of 5 runs. With replay paused on both replicas, every run would fail so;
    each of ten runs in a row must pass.
    """
    for replica in cluster.replicas:
        cluster.pause_replay(replica)
    for run_number in range(RUNS):
        result = run(cluster, "manage.py", "test", "notes", "--noinput")
        assert result.returncode == 0, (run_number, result.stderr[-3000:])
        assert "Ran 5 tests" in result.stderr
        assert "rwsplit.E02" not in result.stderr


def test_pytest_django_passes(rwsplit_cluster):
    result = run(rwsplit_cluster, "-m", "pytest", "-q", "notes/test_pytest_style.py")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 passed" in result.stdout


def test_same_tests_fail_without_the_mechanism(rwsplit_cluster):
    """Proves the tests above can fail: routed reads that reach a mirror break."""
    result = run(
        rwsplit_cluster,
        "manage.py",
        "test",
        "notes",
        "--noinput",
        disable_mirror_routing=True,
    )
    assert result.returncode != 0, result.stderr[-3000:]
    if "rwsplit.E021" in result.stderr:
        # Probed as real replicas, they had not yet replayed the creation of
        # the test database: the checks fail before any test runs.
        return
    assert "FAILED" in result.stderr, result.stderr[-3000:]
    # The TransactionTestCase's routed read lands on a replica: the router
    # answers a replica alias, or the query there is refused by Django.
    assert "FAIL: test_sees_committed_write_through_routed_read" in result.stderr
    assert re.search(
        r"'replica\d' != 'default'|Database queries to 'replica\d'", result.stderr
    ), result.stderr[-3000:]
