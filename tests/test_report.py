"""Redaction of what health errors may reveal (health.report): pure logic."""

from __future__ import annotations

import pytest
from django.db import connections

from django_rwsplit.conf import Config
from django_rwsplit.health.report import redact


@pytest.mark.parametrize(
    "message",
    [
        'connection to server at "::1", port 5432 failed: Connection refused',
        'connection to server at "fe80::1%eth0", port 5432 failed',
        'connection to server at "2001:db8:0:0:0:0:0:1", port 5432 failed',
        'FATAL:  password authentication failed for user "shop_owner"',
        'FATAL:  database "shop_production" does not exist',
    ],
)
def test_redaction_hides_ipv6_addresses_users_and_database_names(
    message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = connections.settings["default"]
    monkeypatch.setitem(default, "USER", "shop_owner")
    monkeypatch.setitem(default, "NAME", "shop_production")
    hidden = str(redact(message, Config(replicas={})))
    for secret in ("::1", "fe80::1", "2001:db8", "shop_owner", "shop_production"):
        assert secret not in hidden, hidden
    assert "<hidden>" in hidden


def test_redaction_keeps_clock_times() -> None:
    assert "12:30:45" in str(redact("at 12:30:45 it failed", Config(replicas={})))
