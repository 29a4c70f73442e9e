"""
A mistyped ``rwsplit_reads`` on a Celery task (issue 22): the worker refuses
to start and names the task; a task that still runs with one reads the
primary instead of running without a scope. Pure logic: no broker, no server.
"""

from __future__ import annotations

import pytest

from django_rwsplit import pinning

celery = pytest.importorskip("celery")

from django_rwsplit.contrib.celery import receivers  # noqa: E402


class Worker:
    """What ``worker_init`` is sent with: a hashable object with the app."""

    def __init__(self, app) -> None:
        self.app = app


@pytest.fixture
def app():
    app = celery.Celery("policies", set_as_current=False)

    # Shared tasks of other apps are not registered here: only these three.
    @app.task(name="good", rwsplit_reads="primary", shared=False)
    def good() -> None: ...

    @app.task(name="plain", shared=False)
    def plain() -> None: ...

    @app.task(name="typo", rwsplit_reads="primry", shared=False)
    def typo() -> None: ...

    return app


def test_the_worker_refuses_to_start_and_names_the_task(app):
    assert receivers.invalid_policies(app) == ["typo (rwsplit_reads='primry')"]
    receivers.connect()
    with pytest.raises(SystemExit, match=r"typo \(rwsplit_reads='primry'\)"):
        celery.signals.worker_init.send(sender=Worker(app))


def test_the_system_check_names_the_task(app, monkeypatch):
    from django_rwsplit.contrib.celery import apps

    monkeypatch.setattr(celery, "current_app", app)
    (error,) = apps.check_task_policies()
    assert error.id == "rwsplit.E027"
    assert "typo (rwsplit_reads='primry')" in error.msg


def test_valid_policies_start(app):
    del app.tasks["typo"]
    receivers.check_policies(sender=Worker(app))


def test_a_task_with_a_typo_reads_the_primary(app, caplog):
    task = app.tasks["typo"]
    task.request.headers = {}
    receivers.enter_scope(task_id="t1", task=task)
    try:
        scope = pinning.current_scope()
        assert scope is not None and scope.pinned == "task_primary"
    finally:
        receivers.leave_scope(task_id="t1")
    assert pinning.current_scope() is None
    assert "primry" in caplog.text
