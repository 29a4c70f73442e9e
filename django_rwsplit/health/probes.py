"""Health probes: measure a primary or a replica in one round-trip.

Probes only *measure*; deciding whether a replica is healthy or lagging too
much is the caller's policy. ``check_*`` methods never raise: failures come
back as a status with ``reachable=False`` and ``error`` set.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from django_rwsplit.conf import measurable_engine
from django_rwsplit.health.pgwire import (
    ProbeConnectionError,
    ProbeTimeout,
    conninfo_from_settings,
    describe_endpoint,
    fetch_row,
)
from django_rwsplit.health.readings import (
    FencedNode,
    PrimaryStatus,
    ProbeFailure,
    ReplicaReading,
)

__all__ = [
    "LSN_MAX",
    "FencedNode",
    "PostgresStreamingProbe",
    "PrimaryStatus",
    "ProbeFailure",
    "Probe",
    "ReplicaReading",
    "format_lsn",
    "parse_lsn",
    "probe_for",
]

logger = logging.getLogger("django_rwsplit")

FetchRow = Callable[[str, str, float], tuple[str | None, ...]]

LSN_MAX = (1 << 64) - 1
_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
# Marker for a WAL receiver row whose details we may not see (the role lacks
# pg_read_all_stats): streaming is then unknown rather than false.
_HIDDEN = "?"

PRIMARY_SQL = (
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn() END,"
    " extract(epoch FROM now()),"
    # The standbys a commit waits for (visible_on_replicas: remote_apply).
    " (SELECT string_agg(application_name, ',' ORDER BY application_name)"
    " FROM pg_stat_replication WHERE sync_state = 'sync')"
)
REPLICA_SQL = (
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END,"
    " pg_last_wal_replay_lsn(),"
    " pg_last_wal_receive_lsn(),"
    f" (SELECT coalesce(status, '{_HIDDEN}') FROM pg_stat_wal_receiver LIMIT 1),"
    " extract(epoch FROM pg_last_xact_replay_timestamp()),"
    " extract(epoch FROM now()),"
    # Other sessions running a query now: the replica's load from every
    # process of the fleet (only sessions this role may see are counted).
    " (SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()),"
    # The name its WAL receiver gives the primary: application_name, else
    # the fallback (cluster_name), else libpq's "walreceiver".
    " coalesce((SELECT coalesce("
    "substring(conninfo from '(?:^| )application_name=([^ ]+)'),"
    " substring(conninfo from 'fallback_application_name=([^ ]+)'))"
    " FROM pg_stat_wal_receiver LIMIT 1),"
    " nullif(current_setting('cluster_name'), ''), 'walreceiver')"
)


class Probe(Protocol):
    """Measures database servers; implementations must never raise."""

    def check_primary(
        self, alias: str, settings_dict: Mapping[str, Any], timeout: float
    ) -> PrimaryStatus: ...

    def check_replica(
        self, alias: str, settings_dict: Mapping[str, Any], timeout: float
    ) -> ReplicaReading: ...


def parse_lsn(text: str | None) -> int | None:
    """Parse PostgreSQL's ``'X/Y'`` hex LSN notation; ``None`` stays ``None``."""
    if text is None or not text.strip():
        return None
    match = _LSN_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid LSN {text!r}")
    return (int(match[1], 16) << 32) + int(match[2], 16)


def format_lsn(value: int) -> str:
    """Format an integer LSN the way PostgreSQL prints it (``'16/B374D848'``)."""
    if not 0 <= value <= LSN_MAX:
        raise ValueError(f"LSN out of range: {value}")
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _bool(text: str | None) -> bool | None:
    return None if text is None else text in ("t", "true", "on", "1")


def _float(text: str | None) -> float | None:
    return None if text is None else float(text)


def _streaming(status: str | None) -> bool | None:
    if status == _HIDDEN:
        return None
    return status == "streaming"


class PostgresStreamingProbe:
    """:class:`Probe` for PostgreSQL physical streaming replication."""

    def __init__(self, fetch: FetchRow = fetch_row) -> None:
        self._fetch = fetch

    def _fetch_timed(
        self, conninfo: str, sql: str, timeout: float
    ) -> tuple[tuple[str | None, ...], float | None]:
        """Run the fetch; return its row and the query's own round trip (ms)."""
        if self._fetch is not fetch_row:
            return self._fetch(conninfo, sql, timeout), None
        timing: list[float] = []
        row = fetch_row(conninfo, sql, timeout, timing=timing)
        return row, timing[0] * 1000.0 if timing else None

    def _run(
        self, alias: str, settings_dict: Mapping[str, Any], sql: str, timeout: float
    ) -> tuple[
        tuple[str | None, ...] | None,
        float | None,
        float | None,
        tuple[ProbeFailure, str] | None,
    ]:
        """
        Return ``(row, latency_ms, query_ms, failure)``.

        Exactly one of row and failure (its kind, and in words) is set.
        """
        start = time.perf_counter()
        try:
            row, query_ms = self._fetch_timed(
                conninfo_from_settings(settings_dict), sql, timeout
            )
        except ProbeTimeout:
            words = f"timeout after {timeout * 1000:.0f} ms"
            return None, None, None, (ProbeFailure.TIMEOUT, words)
        except ProbeConnectionError as exc:
            return None, None, None, (ProbeFailure.CONNECTION, str(exc))
        except Exception as exc:
            logger.warning(
                "health probe of %r failed unexpectedly", alias, exc_info=True
            )
            words = f"unexpected error: {type(exc).__name__}"
            return None, None, None, (ProbeFailure.UNEXPECTED, words)
        return row, (time.perf_counter() - start) * 1000.0, query_ms, None

    def check_primary(
        self, alias: str, settings_dict: Mapping[str, Any], timeout: float
    ) -> PrimaryStatus:
        """Check that the primary answers and is not in recovery."""
        checked_at = time.time()
        endpoint = _endpoint(settings_dict)
        row, latency, _, failure = self._run(alias, settings_dict, PRIMARY_SQL, timeout)
        try:
            if row is not None:
                in_recovery, current, now = row[:3]
                sync = row[3] if len(row) > 3 else None
                return PrimaryStatus(
                    alias=alias,
                    endpoint=endpoint,
                    reachable=True,
                    in_recovery=_bool(in_recovery),
                    current_lsn=parse_lsn(current),
                    server_time=_float(now),
                    sync_standbys=tuple(sync.split(",")) if sync else (),
                    latency_ms=latency,
                    checked_at=checked_at,
                )
        except Exception as exc:
            logger.warning("bad primary status from %r", alias, exc_info=True)
            failure = (
                ProbeFailure.UNEXPECTED,
                f"unexpected error: {type(exc).__name__}",
            )
        kind, words = failure or (ProbeFailure.UNEXPECTED, "no answer")
        return PrimaryStatus(
            alias=alias,
            endpoint=endpoint,
            reachable=False,
            error=words,
            failure=kind,
            checked_at=checked_at,
        )

    def check_replica(
        self, alias: str, settings_dict: Mapping[str, Any], timeout: float
    ) -> ReplicaReading:
        """Measure a replica's recovery and WAL replay state."""
        checked_at = time.time()
        endpoint = _endpoint(settings_dict)
        row, latency, query_ms, failure = self._run(
            alias, settings_dict, REPLICA_SQL, timeout
        )
        try:
            if row is not None:
                in_recovery, paused, replay, receive, status, replay_at, now = row[:7]
                active = row[7] if len(row) > 7 else None
                standby = row[8] if len(row) > 8 else None
                return ReplicaReading(
                    alias=alias,
                    endpoint=endpoint,
                    reachable=True,
                    in_recovery=_bool(in_recovery),
                    replay_paused=_bool(paused),
                    streaming=_streaming(status),
                    replay_lsn=parse_lsn(replay),
                    receive_lsn=parse_lsn(receive),
                    last_replay_at=_float(replay_at),
                    server_time=_float(now),
                    latency_ms=latency,
                    query_ms=query_ms,
                    active_backends=None if active is None else int(active),
                    standby_name=standby,
                    checked_at=checked_at,
                )
        except Exception as exc:
            logger.warning("bad replica reading from %r", alias, exc_info=True)
            failure = (
                ProbeFailure.UNEXPECTED,
                f"unexpected error: {type(exc).__name__}",
            )
        kind, words = failure or (ProbeFailure.UNEXPECTED, "no answer")
        return ReplicaReading(
            alias=alias,
            endpoint=endpoint,
            reachable=False,
            error=words,
            failure=kind,
            checked_at=checked_at,
        )


def _endpoint(settings_dict: Mapping[str, Any]) -> str:
    try:
        return describe_endpoint(settings_dict)
    except Exception:
        return "?"


_POSTGRES_PROBE = PostgresStreamingProbe()


def probe_for(settings_dict: Mapping[str, Any]) -> Probe:
    """Return the probe for a ``DATABASES`` entry, based on its ``ENGINE``."""

    engine = str(settings_dict.get("ENGINE") or "")
    if measurable_engine(engine):
        return _POSTGRES_PROBE
    raise ValueError(f"no health probe for ENGINE {engine!r} (rwsplit.E015)")
