"""The replica choice on a fake health state: pure logic, no server needed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from django_rwsplit import balancing, pinning
from django_rwsplit.conf import Config
from django_rwsplit.exceptions import NoReplicaAvailable
from django_rwsplit.health.rotation import Rotation


def fake_state(weights: dict[str, int], replayed: dict[str, int]) -> SimpleNamespace:
    """What balancing reads of a ProcessHealth: rotation, status(), config."""
    return SimpleNamespace(
        rotation=Rotation(weights),
        config=Config(replicas=weights),
        status=lambda alias: SimpleNamespace(
            replay_lsn=replayed.get(alias), query_ms=None, active_backends=None
        ),
    )


def test_a_substitute_has_the_scopes_position_whatever_the_weights():
    """Weights 3:1 used to try replica1 twice and never replica2."""
    state = fake_state({"replica1": 3, "replica2": 1}, {"replica1": 10, "replica2": 99})
    with pinning.scoped(pinning.Scope(min_lsn=50)):
        for _ in range(4):
            assert balancing.substitute_for_read(state) == "replica2"


def test_a_substitute_is_never_an_excluded_replica():
    state = fake_state({"replica1": 1, "replica2": 1}, {"replica1": 99, "replica2": 99})
    for _ in range(4):
        chosen = balancing.substitute_for_read(state, exclude={"replica1"})
        assert chosen == "replica2"


def test_no_replica_at_the_position_means_the_primary():
    state = fake_state({"replica1": 1}, {"replica1": 10})
    with pinning.scoped(pinning.Scope(min_lsn=50)):
        assert balancing.substitute_for_read(state) == "default"


def test_without_a_position_any_replica_serves():
    state = fake_state({"replica1": 1, "replica2": 1}, {})
    seen = {balancing.substitute_for_read(state) for _ in range(4)}
    assert seen == {"replica1", "replica2"}


def test_caught_up_without_asking_uses_the_snapshot_only():
    state = fake_state({"replica1": 1}, {"replica1": 40})
    assert balancing.caught_up(state, "replica1", pinning.Scope(min_lsn=40), ask=False)
    assert not balancing.caught_up(
        state, "replica1", pinning.Scope(min_lsn=41), ask=False
    )
    assert balancing.caught_up(state, "replica1", None, ask=False)


def test_fallback():
    assert balancing.fallback(Config(fallback="primary")) == "default"
    with pytest.raises(NoReplicaAvailable):
        balancing.fallback(Config(fallback="error"))
