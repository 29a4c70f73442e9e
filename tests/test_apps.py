"""AppConfig.ready() does the wiring; importing a module does none."""

from __future__ import annotations

import subprocess
import sys

from django_rwsplit import pinning, planner, signals

CHECK_IMPORTS = """
import django_rwsplit.backends.postgresql.base, django_rwsplit.routers
from django_rwsplit import pinning, signals
print(len(pinning._on_activate), len(signals.replica_ejected.receivers))
"""


def test_ready_wires_the_router_and_the_pools():
    assert planner.forget_primary_connections in pinning._on_activate
    uids = [receiver[0][0] for receiver in signals.replica_ejected.receivers]
    assert "django_rwsplit.backends.pools" in uids


def test_importing_the_router_and_the_engine_wires_nothing():
    done = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]
