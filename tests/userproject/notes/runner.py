"""
Test runner for the mechanism-off run only: start with every replica in rotation.

With ``ROUTE_TEST_MIRRORS_TO_PRIMARY`` off, whether a routed read reaches a
mirror depends on the health checks: a replica that has not yet replayed the
fresh test database is out of rotation for a few checks, and its reads fall
back to the primary. Waiting for the rotation (polling, with a deadline)
makes that run prove what it means to: reads that reach a mirror break.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.test.runner import DiscoverRunner

from django_rwsplit.conf import get_config
from django_rwsplit.health import registry as health_registry

DEADLINE_SECONDS = 30.0


class ReplicasInRotationRunner(DiscoverRunner):
    """Run the tests once every configured replica serves reads."""

    def run_checks(self, databases: Any) -> None:
        super().run_checks(databases)
        config = get_config()
        state = health_registry.process_health(config)
        expected = set(config.replicas)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while set(state.rotation.members) != expected:
            if time.monotonic() > deadline:
                snapshot = state.tracker.snapshot()
                sys.exit(f"replicas still out after {DEADLINE_SECONDS} s: {snapshot}")
            time.sleep(0.05)
