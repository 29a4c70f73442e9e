"""The database router: writes to the primary, reads to a replica in rotation."""

from __future__ import annotations

from typing import Any

from django_rwsplit import conf, observe, planner

_for_config = planner.for_config


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
        # This runs for every read: the planner decides (no I/O when unpinned).
        config = conf.cached or conf.get_config()
        if config.clusters:
            config = config.cluster_for_model(model)
        plan = (config.read_planner or _for_config(config)).plan()
        if observe.listeners:
            observe.read(plan.alias, plan.reason)
        return plan.alias

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
