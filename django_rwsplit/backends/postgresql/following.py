"""
Following a primary that moves, on the primary alias's connections.

A primary alias that lists several nodes (libpq multi-host ``HOST``) connects
to the node the health rounds found writable on the newest timeline
(:mod:`django_rwsplit.health.nodes`), never to libpq's first writable host;
before the first round the connection makes that role check itself. A kept
connection to a node writes no longer go to is closed before its next use;
a connect, or its set-up, that failed is tried once more on a fresh role
check, then until ``PRIMARY_WAIT`` (nothing was written yet); a COMMIT cut short raises
:class:`~django_rwsplit.exceptions.WriteInterrupted` (outcome unknown).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from django.db.utils import InterfaceError, OperationalError

from django_rwsplit.backends.postgresql.membership import ClusterMember
from django_rwsplit.backends.postgresql.primary_switch import switch_error
from django_rwsplit.exceptions import PrimaryUnavailable, WriteInterrupted
from django_rwsplit.health import nodes
from django_rwsplit.health import registry as health_registry


class FollowsThePrimary(ClusterMember):
    """The primary alias's side of a failover (see the module docstring)."""

    # A primary alias listing several nodes: the node (``host:port``) this
    # connection reached; None otherwise.
    connected_node: str | None = None
    # Set when the primary went away: the next connection asks the nodes.
    _fresh_role_check = False

    def _lists_nodes(self) -> bool:
        return nodes.lists_several(self.settings_dict)

    def _write_node(self) -> str | None:
        """
        The node writes go to, for a primary alias that lists several.

        The health rounds' choice; before the first round, a role check made
        now (bounded by ``CHECK_TIMEOUT``), never libpq's first writable
        host, which may be an old primary on an older timeline.
        """
        if not self._lists_nodes() or not self._is_primary():
            return None
        fresh, self._fresh_role_check = self._fresh_role_check, False
        state = health_registry.for_alias(self.alias)
        if not fresh and state is not None and state.primary_node is not None:
            return state.primary_node
        if fresh:
            nodes.forget_found(self.alias)
        config = self._settings()
        return nodes.find_write_node(
            self.alias, self.settings_dict, config.check_timeout, config.check_interval
        )

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        node = self._write_node()
        if node is not None:
            host, _, port = node.rpartition(":")
            params["host"], params["port"] = host, port
        return params

    def _left_behind(self) -> bool:
        """Whether this primary connection is to a node writes no longer go to."""
        node = self.connected_node
        if node is None or self.connection is None or self.in_atomic_block:
            return False
        state = health_registry.for_alias(self.alias)
        known = state.primary_node if state is not None else None
        return known is not None and known != node

    def connect(self) -> None:
        """
        Connect; on the primary alias, a connect or set-up the primary's going
        away cut short is tried again on a fresh role check.

        Once at once when the alias lists several nodes (the primary may have
        just moved), then until ``PRIMARY_WAIT`` seconds have passed, if set.
        Nothing was written on a connection being set up: trying again is safe.
        """
        if not self._is_primary():
            super().connect()
            return
        deadline = time.monotonic() + self._settings().primary_wait
        attempt = 0 if self._lists_nodes() else 1
        while True:
            try:
                super().connect()
                return
            except PrimaryUnavailable:
                attempt += 1
                if attempt > 1 and time.monotonic() >= deadline:
                    raise
                if attempt > 1:
                    time.sleep(0.05)
                self.leave_node()

    def init_connection_state(self) -> None:
        """A primary that goes away while the connection is set up: a 503, not a 500."""
        try:
            super().init_connection_state()
        except (OperationalError, InterfaceError, psycopg.Error) as error:
            # psycopg's own error here: Django wraps it only further out.
            kind = self._left_the_node(error)
            if kind is None:
                raise
            raise PrimaryUnavailable(
                f"The primary went away while the connection was set up ({kind}); "
                "nothing was written."
            ) from error

    def is_cluster_primary(self) -> bool:
        """Whether this alias is a cluster's primary (it takes the writes)."""
        return self._is_primary()

    def leave_node(self) -> None:
        """Drop this primary connection; the next one asks the nodes afresh."""
        self.close()
        self._fresh_role_check = True

    def _left_the_node(self, error: BaseException) -> str | None:
        """
        If ``error`` means this primary's node went away: leave it and return
        why (the SQLSTATE, or "broken"); else None (the caller re-raises).
        """
        kind = switch_error(error, self.connection)
        if kind is None or not self._is_primary():
            return None
        self.leave_node()
        return kind

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]
        except (OperationalError, InterfaceError) as error:
            kind = self._left_the_node(error)
            if kind is None:
                raise
            raise WriteInterrupted(
                f"The primary went away during COMMIT ({kind}); the transaction "
                "may or may not have been committed (outcome unknown): check "
                "before repeating it.",
                outcome_unknown=True,
            ) from error
