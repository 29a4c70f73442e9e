"""The database router: writes to the primary, reads to a replica in rotation."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from django_rwsplit import balancing, conf, observe, pinning
from django_rwsplit.pin_reasons import PinReason


class _PrimaryConnection(threading.local):
    """
    The calling thread's primary ``DatabaseWrapper``, remembered per thread.

    ``connections[alias]`` costs about a microsecond (asgiref's ``Local``
    probes for a running event loop on every access); the router asks whether
    the primary is inside ``atomic()`` on every read, so it keeps the wrapper
    Django handed this thread. It is forgotten whenever a routing scope is
    activated (each request, each ``read_after`` block), so a wrapper
    replaced with ``connections[alias] = ...`` is seen by the next request
    at the latest.
    """

    wrapper: BaseDatabaseWrapper | None = None
    # With several clusters (RWSPLIT["CLUSTERS"]): each primary's, by alias.
    others: dict[str, BaseDatabaseWrapper] | None = None


_primary_connection = _PrimaryConnection()
_pin_depth = pinning.get_pin_depth
_cluster_pins = pinning.get_cluster_pins
_current_scope = pinning.get_scope
_choose_replica = balancing.choose_replica
_unscoped_write = pinning.get_unscoped_write
_unscoped_writes = pinning.get_unscoped_writes
_NONE: dict[str, float] = {}
# Bound once: the read path reads module globals, not enum attributes.
_NO_REPLICAS = PinReason.NO_REPLICAS
_PIN_PRIMARY = PinReason.PIN_PRIMARY
_WRITE = PinReason.WRITE
_TRANSACTION = PinReason.TRANSACTION


def forget_primary_connection() -> None:
    """Drop the remembered primary wrappers of the calling thread."""
    _primary_connection.wrapper = None
    _primary_connection.others = None


def _cluster_primary(alias: str) -> BaseDatabaseWrapper:
    """The calling thread's wrapper of a cluster's primary ``alias``."""
    others = _primary_connection.others
    if others is None:
        others = _primary_connection.others = {}
    wrapper = others.get(alias)
    if wrapper is None:
        wrapper = others[alias] = connections[alias]
    return wrapper


class ReadWriteRouter:
    """
    Route writes to the primary and reads to a healthy replica.

    Reads go to the primary when the context is pinned (by a write, an unsafe
    HTTP method, the pin cookie or :func:`~django_rwsplit.pin_primary`), while
    the primary connection is inside ``atomic()`` (other than the view's own
    ``ATOMIC_REQUESTS`` transaction of a safe request that has not written),
    and when no replica is in rotation. Within a request, reads stay on the
    replica chosen for the first read while it remains in rotation.

    With several clusters (``RWSPLIT["CLUSTERS"]``) each model is served by
    its cluster (by model, then app label, else the default one), and all of
    the above holds per cluster: a write to one pins that cluster's reads.
    """

    def db_for_read(self, model: type[Any], **hints: Any) -> str:
        # This runs for every read: keep it to attribute reads, no I/O.
        config = conf.cached or conf.get_config()
        if config.clusters:
            return self._read_in_cluster(config.cluster_for_model(model))
        primary = config.primary
        reason: PinReason | None
        if not config.replicas:
            alias, reason = primary, _NO_REPLICAS
        elif _pin_depth():
            alias, reason = primary, _PIN_PRIMARY
        else:
            scope = _current_scope()
            if scope is not None and scope.pinned is not None:
                alias, reason = primary, scope.pinned
            elif (
                scope is None
                and (wrote_at := _unscoped_write())
                and time.monotonic() - wrote_at < config.sticky_seconds
            ):
                # Outside any scope, a write pins its context for a while.
                alias, reason = primary, _WRITE
            else:
                wrapper = _primary_connection.wrapper
                if wrapper is None or wrapper.alias != primary:
                    wrapper = _primary_connection.wrapper = connections[primary]
                if wrapper.in_atomic_block and (
                    scope is None
                    or scope.request_atomic_depth != len(wrapper.atomic_blocks)
                ):
                    alias, reason = primary, _TRANSACTION
                else:
                    alias, reason = _choose_replica(config, scope), None
        if observe.listeners:
            observe.read(alias, reason)
        return alias

    @staticmethod
    def _read_in_cluster(config: conf.Config) -> str:
        """
        :meth:`db_for_read` with several clusters: the same rules, per cluster.

        ``config`` is the model's cluster; its routing state in the unit of
        work is ``scope.of(config.name)``, its pins ``pin_primary(name)``.
        (Kept apart so that a project with one cluster pays nothing for it.)
        """
        primary = config.primary
        reason: PinReason | None
        if not config.replicas:
            alias, reason = primary, _NO_REPLICAS
        elif _pin_depth() or config.name in _cluster_pins():
            alias, reason = primary, _PIN_PRIMARY
        else:
            base = _current_scope()
            scope = None if base is None else base.of(config.name)
            if scope is not None and scope.pinned is not None:
                alias, reason = primary, scope.pinned
            elif (
                scope is None
                and (
                    wrote_at := _unscoped_write()
                    if config.is_default
                    else _unscoped_writes(_NONE).get(config.name, 0.0)
                )
                and time.monotonic() - wrote_at < config.sticky_seconds
            ):
                alias, reason = primary, _WRITE
            else:
                others = _primary_connection.others
                wrapper = others.get(primary) if others is not None else None
                if wrapper is None:
                    wrapper = _cluster_primary(primary)
                if wrapper.in_atomic_block and (
                    scope is None
                    or scope.request_atomic_depth != len(wrapper.atomic_blocks)
                ):
                    alias, reason = primary, _TRANSACTION
                elif config.is_default:
                    alias, reason = _choose_replica(config, base), None
                else:
                    alias, reason = balancing.choose_in_cluster(config, base), None
        if observe.listeners:
            observe.read(alias, reason)
        return alias

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        config = conf.cached or conf.get_config()
        if config.clusters:
            return config.cluster_for_model(model).primary
        return config.primary

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        """Relations within one cluster only (its primary and replicas)."""
        config = conf.config_or_none()
        if config is None:
            return None
        first = config.cluster_for_alias(obj1._state.db)
        second = config.cluster_for_alias(obj2._state.db)
        if first is None or second is None:
            return None
        return first is second

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        """
        Migrate on primaries only; with several clusters, each model's own.

        A model (``hints["model"]``, or ``model_name`` with ``app_label``)
        migrates on the primary of its cluster only; operations that name no
        model (``RunSQL``, ``RunPython``) follow their app's cluster.
        """
        config = conf.config_or_none()
        if config is None:
            return None
        cluster = config.cluster_for_alias(db)
        if cluster is None:
            return None
        if db in cluster.replicas:
            return False
        if not config.clusters:
            return None
        return cluster is self._cluster_to_migrate(config, app_label, hints)

    @staticmethod
    def _cluster_to_migrate(
        config: conf.Config, app_label: str, hints: dict[str, Any]
    ) -> conf.Config:
        model = hints.get("model")
        if model is not None:
            return config.cluster_for_model(model)
        model_name = hints.get("model_name")
        if model_name:
            name = config.model_clusters.get(f"{app_label}.{model_name.lower()}")
            if name:
                return config.cluster(name)
        name = config.app_clusters.get(app_label)
        return config.cluster(name) if name else config
