"""Which cluster a connection's alias belongs to, and as what (primary, replica)."""

from __future__ import annotations

from django.db.backends.postgresql import base

from django_rwsplit import conf


class ClusterMember(base.DatabaseWrapper):
    """A PostgreSQL wrapper that knows its alias's cluster (``RWSPLIT``)."""

    def _cluster(self) -> conf.Config | None:
        """The cluster (of a valid RWSPLIT) this alias is a primary or replica of."""
        return conf.cluster_of(self.alias)

    def _settings(self) -> conf.Config:
        """This alias's cluster, else the setting (for its timeouts)."""
        return self._cluster() or conf.get_config()

    def _is_replica(self) -> bool:
        config = self._cluster()
        return config is not None and self.alias in config.replicas

    def _is_primary(self) -> bool:
        config = self._cluster()
        return config is not None and self.alias == config.primary
