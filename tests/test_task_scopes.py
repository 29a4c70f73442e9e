"""task_scopes: the scope a task runs in, by its policy and token (pure logic)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_rwsplit import consistency, pinning, task_scopes
from django_rwsplit.pin_reasons import PinReason

RWSPLIT = {"REPLICAS": ["replica1", "replica2"], "ROUTE_TEST_MIRRORS_TO_PRIMARY": False}


@override_settings(RWSPLIT=RWSPLIT)
def test_after_the_publisher_reads_after_its_position():
    scope = task_scopes.scope_for(consistency.encode(0x1234))
    assert scope.pinned is None
    assert scope.min_lsn == 0x1234


@override_settings(RWSPLIT=RWSPLIT)
def test_a_time_token_pins_the_task():
    assert task_scopes.scope_for(consistency.encode(None)).pinned == PinReason.TOKEN


@override_settings(RWSPLIT=RWSPLIT)
@pytest.mark.parametrize("token", [None, "garbage", "x" * 10_000])
def test_no_token_or_a_bad_one_reads_replicas(token):
    scope = task_scopes.scope_for(token)
    assert scope.pinned is None and scope.min_lsn is None


@override_settings(RWSPLIT=RWSPLIT)
def test_the_primary_policy_pins_every_cluster_whatever_the_token():
    scope = task_scopes.scope_for(None, task_scopes.PRIMARY)
    assert scope.pinned is PinReason.TASK_PRIMARY
    assert scope.of("analytics").pinned is PinReason.TASK_PRIMARY


@override_settings(RWSPLIT=RWSPLIT)
def test_the_replicas_policy_ignores_the_token():
    scope = task_scopes.scope_for(consistency.encode(0x1234), task_scopes.REPLICAS)
    assert scope.min_lsn is None and scope.pinned is None


@pytest.mark.parametrize("token", [None, "anything"])
def test_an_unknown_policy_is_refused_with_or_without_a_token(token):
    with pytest.raises(ValueError, match="unknown rwsplit task policy 'primry'"):
        task_scopes.scope_for(token, "primry")


def test_running_scopes_restore_what_was_current():
    running = task_scopes.RunningScopes()
    outer = pinning.Scope()
    token = pinning.activate(outer)
    try:
        inner = pinning.Scope()
        running.enter("t1", inner)
        assert pinning.current_scope() is inner and len(running) == 1
        running.leave("t1")
        assert pinning.current_scope() is outer and len(running) == 0
        running.leave("t1")  # twice: harmless
    finally:
        pinning.deactivate(token)
