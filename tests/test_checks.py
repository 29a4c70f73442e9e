"""System checks: every id, registration, and the database-probing check."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_rwsplit.checks import check_databases, check_settings, check_wiring
from django_rwsplit.routers import ReadWriteRouter

pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")

OK = {"REPLICAS": ["replica1", "replica2"], "ROUTE_TEST_MIRRORS_TO_PRIMARY": False}


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def settings_errors(rwsplit) -> list[str]:
    with override_settings(RWSPLIT=rwsplit):
        return ids(check_settings())


def test_valid_settings_pass():
    assert settings_errors(OK) == []
    assert settings_errors({}) == []


def test_absent_setting_passes(settings):
    del settings.RWSPLIT
    assert ids(check_settings()) == []


@pytest.mark.parametrize(
    ("rwsplit", "expected"),
    [
        (["replica1"], ["rwsplit.E001"]),
        ({**OK, "STICKY_SECOND": 3}, ["rwsplit.E002"]),
        ({**OK, "PRIMARY": "nope"}, ["rwsplit.E003"]),
        ({"REPLICAS": "replica1"}, ["rwsplit.E004"]),
        ({"REPLICAS": [1, 2]}, ["rwsplit.E004"]),
        ({"REPLICAS": ["replica1", "ghost"]}, ["rwsplit.E005"]),
        ({"REPLICAS": ["default", "replica1"]}, ["rwsplit.E006"]),
        ({"REPLICAS": {"replica1": {"WEIGHT": 0}}}, ["rwsplit.E007"]),
        ({"REPLICAS": {"replica1": {"WEIGHT": "3"}}}, ["rwsplit.E007"]),
        ({"REPLICAS": {"replica1": {"WIEGHT": 3}}}, ["rwsplit.E007"]),
        ({**OK, "STICKY_SECONDS": -1}, ["rwsplit.E008"]),
        ({**OK, "CHECK_INTERVAL": 0}, ["rwsplit.E008"]),
        ({**OK, "MAX_LAG_SECONDS": "5"}, ["rwsplit.E008"]),
        ({**OK, "MAX_LAG_BYTES": 1.5}, ["rwsplit.E008"]),
        ({**OK, "READMIT_AFTER": True}, ["rwsplit.E008"]),
        ({**OK, "PIN_UNSAFE_METHODS": "yes"}, ["rwsplit.E009"]),
        ({**OK, "COOKIE_NAME": "bad name;"}, ["rwsplit.E010"]),
        ({**OK, "COOKIE_NAME": ""}, ["rwsplit.E010"]),
        ({**OK, "FALLBACK": "replica"}, ["rwsplit.E011"]),
        ({**OK, "CONSISTENCY": "strong"}, ["rwsplit.E012"]),
        ({**OK, "HEALTH_CACHE": "nope"}, ["rwsplit.E013"]),
        ({**OK, "HEALTH_ENDPOINT_TOKEN": ""}, []),  # empty: no token
        ({**OK, "HEALTH_ENDPOINT_TOKEN": 1234}, ["rwsplit.E014"]),
        ({**OK, "HEALTH_ENDPOINT_TOKEN": "x"}, ["rwsplit.E014"]),
        ({**OK, "HEALTH_ENDPOINT_TOKEN": "fifteen-chars-x"}, ["rwsplit.E014"]),
        ({**OK, "HEALTH_ENDPOINT_TOKEN": "sixteen-chars-xy"}, []),
        ({"REPLICAS": {"replica1": {"WEIGHT": 101}}}, ["rwsplit.E007"]),
        ({"REPLICAS": {"replica1": {"WEIGHT": 10**9}}}, ["rwsplit.E007"]),
        ({"REPLICAS": {"replica1": {"WEIGHT": 100}}}, []),
        ({**OK, "CHECK_INTERVAL": 1e-9}, ["rwsplit.E008"]),
        ({**OK, "CHECK_TIMEOUT": 1e-9}, ["rwsplit.E008"]),
        ({**OK, "CHECK_INTERVAL": 0.05, "CHECK_TIMEOUT": 0.05}, []),
        ({**OK, "COOKIE_NAME": "sessionid"}, ["rwsplit.E019"]),
        ({**OK, "COOKIE_NAME": "csrftoken"}, ["rwsplit.E019"]),
        ({**OK, "COOKIE_NAME": "django_language"}, ["rwsplit.E019"]),
        ({**OK, "HEALTH_ENDPOINT_SHOW_HOSTS": 1}, ["rwsplit.E009"]),
        ({**OK, "METRICS": "on"}, ["rwsplit.E009"]),
        ({**OK, "BALANCER": "random"}, ["rwsplit.E016"]),
        ({**OK, "RESPONSE_TOKEN_HEADER": "X Token"}, ["rwsplit.E017"]),
        ({**OK, "REQUEST_TOKEN_HEADER": 7}, ["rwsplit.E017"]),
        ({**OK, "USER_PIN_CACHE": "nope"}, ["rwsplit.E018"]),
        # Issue 22: a secret read from a file with its newline.
        ({**OK, "HEALTH_ENDPOINT_TOKEN": "sixteen-chars-xy\n"}, ["rwsplit.E014"]),
        ({**OK, "HEALTH_ENDPOINT_TOKEN": " sixteen-chars-xy"}, ["rwsplit.E014"]),
        # Issue 22: headers HTTP, browsers, proxies or Django already use.
        ({**OK, "RESPONSE_TOKEN_HEADER": "Content-Type"}, ["rwsplit.E017"]),
        ({**OK, "RESPONSE_TOKEN_HEADER": "location"}, ["rwsplit.E017"]),
        ({**OK, "RESPONSE_TOKEN_HEADER": "Connection"}, ["rwsplit.E017"]),
        ({**OK, "RESPONSE_TOKEN_HEADER": "Set-Cookie"}, ["rwsplit.E017"]),
        ({**OK, "REQUEST_TOKEN_HEADER": "Authorization"}, ["rwsplit.E017"]),
        ({**OK, "REQUEST_TOKEN_HEADER": "X-Forwarded-For"}, ["rwsplit.E017"]),
        ({**OK, "REQUEST_TOKEN_HEADER": "Sec-Fetch-Mode"}, ["rwsplit.E017"]),
        ({**OK, "RESPONSE_TOKEN_HEADER": "X-App-Token"}, []),
    ],
)
def test_each_bad_setting_has_its_id(rwsplit, expected):
    assert settings_errors(rwsplit) == expected


def test_unknown_key_hint_suggests_the_close_match():
    with override_settings(RWSPLIT={**OK, "STICKY_SECOND": 3}):
        (error,) = check_settings()
    assert error.hint == "Did you mean 'STICKY_SECONDS'?"
    assert error.msg.endswith(".")


def test_nullable_bounds_accept_none():
    assert settings_errors({**OK, "MAX_LAG_SECONDS": None, "MAX_LAG_BYTES": None}) == []


def test_replica_health_needs_a_postgresql_engine(settings):
    settings.DATABASES = {
        **settings.DATABASES,
        "replica2": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    }
    with override_settings(RWSPLIT=OK):
        (error,) = check_settings()
    assert error.id == "rwsplit.E015"
    assert "'replica2'" in error.msg and "sqlite3" in error.msg


def test_non_postgresql_primary_without_replicas_is_fine(settings):
    settings.DATABASES = {
        **settings.DATABASES,
        "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    }
    assert settings_errors({"PRIMARY": "other"}) == []
    assert settings_errors({"PRIMARY": "other", "REPLICAS": ["replica1"]}) == [
        "rwsplit.E015"
    ]


def test_router_missing_warns():
    with override_settings(DATABASE_ROUTERS=[]):
        assert "rwsplit.W001" in ids(check_wiring())


def test_router_subclass_counts():
    with override_settings(DATABASE_ROUTERS=["tests.test_checks.SubRouter"]):
        assert "rwsplit.W001" not in ids(check_wiring())


def test_middleware_missing_warns():
    with override_settings(MIDDLEWARE=[]):
        assert "rwsplit.W002" in ids(check_wiring())


def test_replica_without_test_mirror_warns(settings):
    settings.DATABASES = {
        **settings.DATABASES,
        "replica2": {**settings.DATABASES["replica2"], "TEST": {}},
    }
    assert ids(check_wiring()).count("rwsplit.W003") == 1


def test_replica_with_plain_engine_warns(settings):
    settings.DATABASES = {
        **settings.DATABASES,
        "replica1": {
            **settings.DATABASES["replica1"],
            "ENGINE": "django.db.backends.postgresql",
        },
    }
    assert ids(check_wiring()) == ["rwsplit.W004"]


def test_replica_with_atomic_requests_warns(settings):
    settings.DATABASES = {
        **settings.DATABASES,
        "replica1": {**settings.DATABASES["replica1"], "ATOMIC_REQUESTS": True},
    }
    assert ids(check_wiring()) == ["rwsplit.W006"]


@pytest.mark.parametrize(
    ("reads", "says"), [(True, "until they write"), (False, "none on a replica")]
)
def test_atomic_requests_on_the_primary_says_what_happens(settings, reads, says):
    settings.DATABASES = {
        **settings.DATABASES,
        "default": {**settings.DATABASES["default"], "ATOMIC_REQUESTS": True},
    }
    settings.RWSPLIT = {**settings.RWSPLIT, "REPLICA_READS_IN_ATOMIC_REQUESTS": reads}
    (message,) = check_wiring()
    assert message.id == "rwsplit.I001" and says in message.msg


def test_lsn_consistency_on_non_postgres_warns(settings):
    settings.DATABASES = {
        **settings.DATABASES,
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    }
    assert "rwsplit.W005" in ids(check_wiring())


def test_lsn_consistency_on_a_postgresql_subclass_does_not_warn(settings):
    settings.DATABASES = {
        **settings.DATABASES,
        "default": {**settings.DATABASES["default"], "ENGINE": "tests.pgcompat"},
    }
    assert "rwsplit.W005" not in ids(check_wiring())


def test_wiring_is_clean_for_the_suite_settings():
    assert ids(check_wiring()) == []


def test_checks_are_registered():
    with (
        override_settings(RWSPLIT={**OK, "FALLBACK": "nowhere"}),
        pytest.raises(SystemCheckError, match="rwsplit.E011"),
    ):
        call_command("check")


def test_database_check_runs_only_when_asked():
    assert check_databases(databases=None) == []


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_database_check_probes_named_replicas(cluster):
    assert check_databases(databases=["default", "replica1"]) == []
    cluster.stop_replica("replica1")
    assert ids(check_databases(databases=["replica1"])) == ["rwsplit.E021"]


class SubRouter(ReadWriteRouter):
    pass


def test_a_token_of_every_cluster_must_fit_what_decoding_accepts(settings):
    """Issue 22: tokens the server issues and then rejects lose read-your-writes."""
    primaries = {f"primary_of_a_long_cluster_name_{n:02}" for n in range(24)}
    settings.DATABASES = {
        **settings.DATABASES,
        **{alias: dict(settings.DATABASES["default"]) for alias in primaries},
    }

    def clusters(count: int) -> dict[str, object]:
        return {
            "CLUSTERS": {
                alias.removeprefix("primary_of_"): {"PRIMARY": alias}
                for alias in sorted(primaries)[:count]
            }
        }

    assert settings_errors(clusters(3)) == []
    assert settings_errors(clusters(24)) == ["rwsplit.E026"]
