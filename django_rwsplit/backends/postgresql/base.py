"""
Django's PostgreSQL backend, plus passive failover for replica aliases.

When a connection to a replica cannot be opened, the replica leaves rotation
at once and this connection is opened to another replica in rotation or to
the primary instead, so the read that needed it still succeeds. Such a
substitute connection is closed again after one ``CHECK_INTERVAL``.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.postgresql import base

from django_rwsplit import conf
from django_rwsplit.health import registry


class DatabaseWrapper(base.DatabaseWrapper):
    """PostgreSQL wrapper with passive replica failover (see module docstring)."""

    substitute_until: float | None = None
    substitute_for: str | None = None

    def ensure_connection(self) -> None:
        until = self.substitute_until
        if until is not None and time.monotonic() >= until and not self.in_atomic_block:
            self.substitute_until = self.substitute_for = None
            self.close()
        super().ensure_connection()

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        try:
            return super().get_new_connection(conn_params)
        except psycopg.Error as error:
            target = self._failover_target(error)
            if target is None:
                raise
        substitute = connections[target].get_connection_params()
        connection = super().get_new_connection(substitute)
        self.substitute_for = target
        self.substitute_until = time.monotonic() + conf.get_config().check_interval
        return connection

    def _failover_target(self, error: BaseException) -> str | None:
        """Eject this replica and return the alias to connect to instead."""
        try:
            config = conf.get_config()
        except ImproperlyConfigured:
            return None
        if self.alias not in config.replicas or self.settings_dict["OPTIONS"].get(
            "pool"
        ):
            return None
        registry.report_unreachable(self.alias, error)
        state = registry.current()
        alias = state.tracker.rotation.pick() if state is not None else None
        if alias is None or alias == self.alias:
            return config.primary
        return alias
