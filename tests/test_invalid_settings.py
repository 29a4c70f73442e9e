"""
An invalid ``RWSPLIT`` never fails a request (conf.get_config).

gunicorn and uvicorn do not run Django's system checks, so a setting that
fails them must not turn every request into a 500: the app sends every query
to the primary and logs the check errors once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from django.db import router
from django.test import Client, override_settings

from django_rwsplit import conf
from django_rwsplit.testing.cluster import ClusterError, LocalCluster
from tests.chaos.servers import (
    ChaosSettings,
    Server,
    get_json,
    prepare_database,
    running_servers,
)
from tests.testapp.models import Item
from tests.utils import fast_health

pytestmark = pytest.mark.cluster

INVALID = fast_health(CHECK_INTERVAL=1e-9, STICKY_SECONDS=-1)


@pytest.mark.django_db(transaction=True, databases="__all__")
@override_settings(RWSPLIT=INVALID)
def test_invalid_settings_send_every_query_to_the_primary(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="django_rwsplit"):
        for _ in range(3):
            assert router.db_for_read(Item) == "default"
            assert router.db_for_write(Item) == "default"
            assert Client().get("/no-such-page/").status_code == 404
    logged = [r for r in caplog.records if "RWSPLIT is invalid" in r.getMessage()]
    assert len(logged) == 1, "logged once per change of the setting"
    assert "rwsplit.E008" in logged[0].getMessage()
    assert conf.config_or_none() is None  # the health views say misconfigured


@pytest.fixture(scope="module")
def invalid_servers(
    rwsplit_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    valid = ChaosSettings(database="rwsplit_invalid")
    prepare_database(rwsplit_cluster, valid)  # migrate runs the checks: valid
    settings = replace(valid, check_interval=0.001)
    log_dir = Path(tmp_path_factory.mktemp("invalid-settings"))
    try:
        with running_servers(rwsplit_cluster, settings, log_dir, workers=1) as servers:
            yield servers
    finally:
        with contextlib.suppress(ClusterError):
            rwsplit_cluster.execute(
                rwsplit_cluster.primary,
                'DROP DATABASE IF EXISTS "rwsplit_invalid" WITH (FORCE)',
            )


@pytest.mark.parametrize("name", ["wsgi", "asgi"])
def test_gunicorn_and_uvicorn_serve_with_an_invalid_setting(
    invalid_servers: dict[str, Server], rwsplit_cluster: LocalCluster, name: str
) -> None:
    """CHECK_INTERVAL=0.001 (rwsplit.E008): served by the primary, not a 500."""
    server = invalid_servers[name]
    for _ in range(5):
        status, body = get_json(server.url + "/api/pin/")
        assert status == 200, server.log_tail()
        assert body["port"] == rwsplit_cluster.primary.port
    assert get_json(server.url + "/no-such-page/")[0] == 404
    assert "RWSPLIT is invalid" in server.log.read_text()
