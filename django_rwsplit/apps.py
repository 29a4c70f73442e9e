"""App configuration: wires checks, signals and the write detector in ready()."""

from __future__ import annotations

import os
from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

_fork_hook_registered = False


def _install_write_detector(
    sender: object, connection: BaseDatabaseWrapper, **kwargs: Any
) -> None:
    from django_rwsplit import conf, writes

    config = conf.config_or_none()
    if config is None:
        return
    cluster = config.cluster_for_alias(connection.alias)
    if cluster is not None and connection.alias == cluster.primary:
        writes.install(connection)
        if connection.vendor == "postgresql":  # Django's own engine too
            from django_rwsplit.backends.postgresql import visible_commits

            visible_commits.install(connection)


def _settings_changed(setting: str, **kwargs: Any) -> None:
    from django_rwsplit import conf, process_state

    if setting in ("RWSPLIT", "DATABASES", "CACHES"):
        conf.clear_cache(setting=setting)
        process_state.reset()


def _install_metrics() -> None:
    """Export Prometheus metrics when RWSPLIT["METRICS"] is on."""
    from django_rwsplit import conf

    # parse(), not get_config(): nothing is cached this early, and problems
    # in the setting are left to the system checks.
    config, _ = conf.parse(conf.raw_setting())
    if config.metrics:
        from django_rwsplit import metrics

        metrics.install()


def _start_health_if_serving() -> None:
    """A server or worker starts its health rounds now, off the request path."""
    from django_rwsplit import conf, startup
    from django_rwsplit.health import registry

    if startup.serves():
        config, _ = conf.parse(conf.raw_setting())
        if not config.problems:
            registry.start_serving(conf.get_config())


class RwsplitConfig(AppConfig):
    name = "django_rwsplit"
    verbose_name = "Read/write split"

    def ready(self) -> None:
        global _fork_hook_registered
        from django_rwsplit import balancing, process_state
        from django_rwsplit import checks as rwsplit_checks

        checks.register(rwsplit_checks.check_settings)
        checks.register(rwsplit_checks.check_wiring)
        checks.register(rwsplit_checks.check_databases, checks.Tags.database)
        setting_changed.connect(_settings_changed, dispatch_uid="django_rwsplit")
        connection_created.connect(
            _install_write_detector, dispatch_uid="django_rwsplit"
        )
        balancing.remember_database_names()
        # The process's wiring, here rather than at import time.
        from django_rwsplit import pinning, planner, signals
        from django_rwsplit.backends.postgresql.base import discard_pool

        # Each request (and read_after block) starts from connections[...] again.
        pinning.on_activate(planner.forget_primary_connections)
        signals.replica_ejected.connect(
            discard_pool, weak=False, dispatch_uid="django_rwsplit.backends.pools"
        )
        # A pool of connections to a primary that moved is rebuilt on the new one.
        signals.primary_changed.connect(
            discard_pool, weak=False, dispatch_uid="django_rwsplit.backends.pools"
        )
        _install_metrics()
        if not _fork_hook_registered:
            os.register_at_fork(after_in_child=process_state.reset_after_fork)
            _fork_hook_registered = True
        _start_health_if_serving()
