"""
django-health-check integration: the primary and the replicas of ``RWSPLIT``.

django-health-check 4.x (checks are dataclasses listed on the view)::

    from health_check.views import HealthCheckView

    path("ht/", HealthCheckView.as_view(checks=[
        "health_check.checks.Database",
        "django_rwsplit.contrib.health_check.ReadWriteSplit",
    ]))

``ReadWriteSplit()`` fails (``ServiceUnavailable``) when the primary is
unreachable or read-only, or when no replica is in rotation: the states in
which ``replica_health`` exits 2. Replicas merely out of rotation are
degraded service, not an outage, and 4.x answers HTTP 500 for a warning too,
so they are reported only when asked: ``("...ReadWriteSplit", {"warn": True})``
raises ``ServiceWarning`` for them, and ``{"alias": "replica1"}`` checks one
database (a warning when that replica is out, unavailable when none is in),
so a monitoring view can list :func:`checks` for one row per database.

django-health-check 3.x: call :func:`register` from an ``AppConfig.ready()``.
It registers ``ReadWriteSplitBackend`` (critical: primary, no replica) and
``ReplicaRotationBackend`` (not critical: a ``ServiceWarning`` per replica
out of rotation, shown without failing the endpoint).

The state is this process's health snapshot when its monitor has run a
round; otherwise the primary and replicas are measured now with the probes
of ``manage.py replica_health``. Messages never include credentials, nor
host names or ports unless ``RWSPLIT["HEALTH_ENDPOINT_SHOW_HOSTS"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_rwsplit.conf import Config, get_config
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health import report
from django_rwsplit.health.report import (
    replica_reason,
    stale_problem,
)
from django_rwsplit.health.tracker import HealthSnapshot
from django_rwsplit.health.verdict import primary_problem

try:
    import health_check
except ImportError:  # pragma: no cover - depends on the environment
    raise ImproperlyConfigured(
        "django_rwsplit.contrib.health_check needs django-health-check: "
        "pip install django-health-check"
    ) from None

from health_check.exceptions import ServiceUnavailable, ServiceWarning

__all__ = ["Finding", "checks", "findings_of", "take_snapshot"]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem: ``critical`` ones mean reads or writes are failing."""

    alias: str
    critical: bool
    message: str


def take_snapshot(config: Config) -> HealthSnapshot:
    """
    Return this process's snapshot, starting its monitor if none runs yet.

    Never measures per call: an unauthenticated health URL polled often
    would otherwise open a connection to every server on each poll.
    """
    return health_registry.process_health(config).snapshot()


def findings_of(snapshot: HealthSnapshot, config: Config) -> list[Finding]:
    """Return every problem of ``snapshot``, worst first."""

    def public(text: str) -> str:
        return report.public(text, config)

    findings = []
    stalled = stale_problem(snapshot)
    if stalled is not None:
        findings.append(Finding(config.primary, True, stalled))
    problem = primary_problem(snapshot.primary)
    if problem is not None:
        findings.append(
            Finding(config.primary, True, public(f"primary {config.primary} {problem}"))
        )
    out = [r for r in snapshot.replicas if not r.in_rotation]
    if out and len(out) == len(snapshot.replicas):
        detail = ", ".join(f"{r.alias} ({replica_reason(r)})" for r in out)
        findings += [
            Finding(r.alias, True, public(f"no replica in rotation: {detail}"))
            for r in out
        ]
    else:
        findings += [
            Finding(
                r.alias,
                False,
                public(f"replica {r.alias} out of rotation: {replica_reason(r)}"),
            )
            for r in out
        ]
    return findings


def _problems(alias: str | None) -> list[Finding]:
    config = get_config()
    if alias is not None:
        cluster = config.cluster_for_alias(alias)
        if cluster is None:
            return [Finding(alias, True, f"{alias!r} is not in RWSPLIT")]
        clusters: tuple[Config, ...] = (cluster,)
    else:
        clusters = config.every_cluster()
    findings = []
    for cluster in clusters:
        found = findings_of(take_snapshot(cluster), cluster)
        if config.clusters:
            found = [
                Finding(f.alias, f.critical, f"cluster {cluster.name}: {f.message}")
                for f in found
            ]
        findings += found
    if alias is None:
        # One message per kind: the same outage is not repeated per replica.
        unique: dict[str, Finding] = {}
        for finding in findings:
            unique.setdefault(finding.message, finding)
        return list(unique.values())
    return [f for f in findings if f.alias == alias]


def _raise(findings: Sequence[Finding], warn: bool) -> None:
    critical = [f.message for f in findings if f.critical]
    if critical:
        raise ServiceUnavailable("; ".join(critical))
    warnings = [f.message for f in findings if not f.critical]
    if warnings and warn:
        raise ServiceWarning("; ".join(warnings))


if hasattr(health_check, "HealthCheck"):  # django-health-check >= 4
    from health_check.base import HealthCheck

    @dataclasses.dataclass
    class ReadWriteSplit(HealthCheck):  # type: ignore[misc]
        """
        The primary and the replicas of ``RWSPLIT`` (django-health-check 4.x).

        ``alias``: check one database instead of the whole setup. ``warn``:
        without ``alias``, also fail with a warning while some replica is out
        of rotation (a per-replica check always does).
        """

        alias: str | None = None
        warn: bool = False

        def run(self) -> None:
            """Raise ServiceUnavailable or ServiceWarning; return when healthy."""
            _raise(_problems(self.alias), self.warn or self.alias is not None)

    def checks() -> list[tuple[str, dict[str, Any]]]:
        """Return one ``ReadWriteSplit`` check per configured database, for a view."""
        config = get_config()
        path = f"{__name__}.ReadWriteSplit"
        return [
            (path, {"alias": a})
            for cluster in config.every_cluster()
            for a in (cluster.primary, *cluster.replicas)
        ]

    __all__ += ["ReadWriteSplit"]

else:  # django-health-check 3.x
    from health_check.backends import BaseHealthCheckBackend

    class ReadWriteSplitBackend(BaseHealthCheckBackend):  # type: ignore[misc]
        """Critical: the primary is down or no replica is in rotation."""

        critical_service = True

        def check_status(self, subject: object = None) -> None:
            for finding in _problems(None):
                if finding.critical:
                    self.add_error(ServiceUnavailable(finding.message))

        def identifier(self) -> str:
            return "ReadWriteSplit"

    class ReplicaRotationBackend(BaseHealthCheckBackend):  # type: ignore[misc]
        """Not critical: a warning for each replica out of rotation."""

        critical_service = False

        def check_status(self, subject: object = None) -> None:
            for finding in _problems(None):
                if not finding.critical:
                    self.add_error(ServiceWarning(finding.message))

        def identifier(self) -> str:
            return "ReplicaRotation"

    def checks() -> list[tuple[str, dict[str, Any]]]:
        """Return nothing: 3.x discovers registered backends itself."""
        return []

    __all__ += ["ReadWriteSplitBackend", "ReplicaRotationBackend"]


def register() -> None:
    """Register the 3.x backends with ``health_check.plugins`` (no-op on 4.x)."""
    if hasattr(health_check, "HealthCheck"):
        return
    from health_check.plugins import plugin_dir

    plugin_dir.register(ReadWriteSplitBackend)
    plugin_dir.register(ReplicaRotationBackend)
