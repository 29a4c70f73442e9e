"""RWSPLIT["CLUSTERS"] without a cluster: parsing, checks, routing, tokens, pins."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from django_rwsplit import conf, consistency, pinning
from django_rwsplit.routers import ReadWriteRouter
from tests.testapp.models import Item


def parsed(**clusters: object) -> tuple[conf.Config, list[str]]:
    config, problems = conf.parse(
        {"REPLICAS": ["replica1"], "CHECK_TIMEOUT": 0.7, "CLUSTERS": clusters}
    )
    return config, [f"{p.id} {p.msg}" for p in problems]


ANALYTICS = {"PRIMARY": "demoted", "REPLICAS": ["replica2"], "APPS": ["testapp"]}


def test_a_cluster_inherits_the_top_level_keys_it_does_not_set():
    config, problems = parsed(analytics={**ANALYTICS, "MAX_LAG_SECONDS": 2})
    assert problems == []
    analytics = config.cluster("analytics")
    assert analytics.name == "analytics" and not analytics.is_default
    assert analytics.primary == "demoted"
    assert dict(analytics.replicas) == {"replica2": 1}
    assert analytics.max_lag_seconds == 2.0
    assert analytics.check_timeout == 0.7  # inherited
    assert config.max_lag_seconds == 5.0  # the default cluster keeps its own
    assert [c.name for c in config.every_cluster()] == ["default", "analytics"]
    assert config.alias_clusters == {
        "default": "default",
        "replica1": "default",
        "demoted": "analytics",
        "replica2": "analytics",
    }


def test_a_named_cluster_has_no_replicas_unless_it_lists_them():
    config, problems = parsed(analytics={"PRIMARY": "demoted"})
    assert problems == []
    assert dict(config.cluster("analytics").replicas) == {}


@pytest.mark.parametrize(
    ("clusters", "expected"),
    [
        ({"default": ANALYTICS}, "rwsplit.E023"),
        ({"bad name": ANALYTICS}, "rwsplit.E023"),
        ({"analytics": {"REPLICAS": ["replica2"]}}, "rwsplit.E023"),
        ({"analytics": {**ANALYTICS, "COOKIE_NAME": "x"}}, "rwsplit.E023"),
        ({"analytics": {**ANALYTICS, "REPLICAS": ["replica1"]}}, "rwsplit.E024"),
        ({"analytics": {**ANALYTICS, "APPS": ["nope"]}}, "rwsplit.E025"),
        ({"analytics": {**ANALYTICS, "APPS": "testapp"}}, "rwsplit.E025"),
        ({"analytics": {**ANALYTICS, "MODELS": ["testapp.Nope"]}}, "rwsplit.E025"),
        (
            {
                "analytics": ANALYTICS,
                "other": {"PRIMARY": "default", "APPS": ["testapp"]},
            },
            "rwsplit.E024",
        ),
        ({"analytics": {**ANALYTICS, "PRIMARY": "missing"}}, "rwsplit.E003"),
    ],
)
def test_a_wrong_cluster_fails_the_checks_with_an_id(clusters, expected):
    _, problems = parsed(**clusters)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_bad_cluster_value_names_where_it_is():
    _, problems = parsed(analytics={**ANALYTICS, "CHECK_INTERVAL": -1})
    assert any(
        'RWSPLIT["CLUSTERS"]["analytics"]["CHECK_INTERVAL"]' in p for p in problems
    )


def test_an_app_in_two_clusters_is_refused():
    _, problems = parsed(
        analytics=ANALYTICS,
        other={"PRIMARY": "replica1", "APPS": ["testapp"]},
    )
    assert any(p.startswith("rwsplit.E025") and "already" in p for p in problems)


def test_models_route_by_model_then_app_label():
    config, problems = parsed(
        analytics={"PRIMARY": "demoted", "REPLICAS": ["replica2"], "APPS": ["auth"]},
        items={"PRIMARY": "replica1", "MODELS": ["testapp.Item"]},
    )
    # replica1 is the default cluster's replica and the items primary: E024.
    assert any(p.startswith("rwsplit.E024") for p in problems)
    config, problems = conf.parse(
        {
            "CLUSTERS": {
                "analytics": {"PRIMARY": "demoted", "APPS": ["auth"]},
                "items": {"PRIMARY": "replica1", "MODELS": ["testapp.Item"]},
            }
        }
    )
    assert problems == []
    assert config.cluster_for_model(User).name == "analytics"
    assert config.cluster_for_model(Item).name == "items"
    assert config.model_clusters == {"testapp.item": "items"}


SEVERAL = {
    "REPLICAS": ["replica1"],
    "CLUSTERS": {
        "analytics": {"PRIMARY": "demoted", "REPLICAS": ["replica2"], "APPS": ["auth"]}
    },
}


@override_settings(RWSPLIT=SEVERAL)
def test_writes_and_migrations_follow_the_models_cluster():
    router = ReadWriteRouter()
    assert router.db_for_write(User) == "demoted"
    assert router.db_for_write(Item) == "default"
    assert router.allow_migrate("demoted", "auth", model_name="user") is True
    assert router.allow_migrate("default", "auth", model_name="user") is False
    assert router.allow_migrate("default", "testapp", model_name="item") is True
    assert router.allow_migrate("demoted", "testapp", model_name="item") is False
    assert router.allow_migrate("demoted", "auth") is True  # RunSQL of the app
    assert router.allow_migrate("replica2", "auth") is False
    assert router.allow_migrate("elsewhere", "auth") is None


@override_settings(RWSPLIT=SEVERAL)
def test_an_invalid_setting_keeps_each_cluster_on_its_primary():
    bad = {**SEVERAL, "STICKY_SECONDS": -1}
    with override_settings(RWSPLIT=bad):
        config = conf.get_config()
        assert config.problems
        assert config.replicas == {}
        assert ReadWriteRouter().db_for_write(User) == "demoted"
        assert ReadWriteRouter().db_for_read(User) == "demoted"
        assert ReadWriteRouter().db_for_read(Item) == "default"


@override_settings(RWSPLIT=SEVERAL)
def test_a_token_of_several_clusters_round_trips_and_stays_small():
    config = conf.get_config()
    token = consistency.encode_positions({"default": 0x16B3D48, "analytics": None})
    assert len(token) < 100
    decoded = consistency.decode(token, config)
    assert decoded is not None
    assert decoded.entries() == {"default": 0x16B3D48, "analytics": None}
    only = consistency.decode(consistency.encode_positions({"analytics": 5}), config)
    assert only is not None and only.entries() == {"analytics": 5}
    assert only.lsn is None
    # A single default position is today's token, readable as before.
    assert consistency.encode_positions({"default": 7}).split(":")[0] == "0/7"


@override_settings(RWSPLIT=SEVERAL)
def test_a_tampered_or_unknown_entry_is_ignored():
    config = conf.get_config()
    signed = consistency.encode_positions({"analytics": 5})
    assert consistency.decode(signed.replace("analytics", "analytics2"), config) is None
    gone = consistency.encode_positions({"removed": 5, "default": 9})
    decoded = consistency.decode(gone, config)
    assert decoded is not None and decoded.entries() == {"default": 9}
    garbage = consistency._signer().sign("analytics:zz")
    assert consistency.decode(garbage, config) is None


def test_merging_tokens_keeps_the_later_position_of_each_cluster():
    a = consistency.Token(None, 10.0, {"default": 5, "analytics": 9})
    b = consistency.Token(None, 20.0, {"default": 7, "analytics": None})
    merged = consistency.merge([a, b])
    assert merged is not None
    assert merged.entries() == {"default": 7, "analytics": None}
    assert merged.issued_at == 20.0
    assert consistency.merge([]) is None


def test_a_scope_holds_each_clusters_state_and_shared_pins():
    scope = pinning.Scope()
    assert scope.of("default") is scope
    analytics = scope.of("analytics")
    assert analytics is scope.of("analytics") and analytics.pinned is None
    scope.pin_everywhere("unsafe_method")
    assert scope.pinned == analytics.pinned == "unsafe_method"
    assert scope.of("later").pinned == "unsafe_method"


def test_a_write_pins_only_its_clusters_scope():
    with pinning.scoped(pinning.Scope()) as scope:
        pinning.note_write("analytics")
        assert scope.wrote and scope.written == ("analytics",)
        assert scope.of("analytics").pinned == "write"
        assert scope.pinned is None
        assert pinning.is_pinned("analytics") and not pinning.is_pinned()


def test_a_write_outside_a_scope_pins_only_its_cluster():
    pinning.note_write("analytics")
    assert pinning.wrote_unscoped(5.0, "analytics")
    assert not pinning.wrote_unscoped(5.0)
    assert pinning.unscoped_writes(5.0) == ("analytics",)
    pinning.forget_unscoped_write()
    assert pinning.unscoped_writes(5.0) == ()


@override_settings(RWSPLIT=SEVERAL)
def test_pin_primary_of_one_cluster():
    with pinning.pin_primary("analytics"):
        assert pinning.is_pinned("analytics") and not pinning.is_pinned()
        with pinning.pin_primary("analytics"):
            pass
        assert pinning.is_pinned("analytics")
    assert not pinning.is_pinned("analytics")
    with pinning.pin_primary():
        assert pinning.is_pinned("analytics") and pinning.is_pinned()
    with pytest.raises(ValueError, match="no cluster"):
        pinning.pin_primary("nope")
