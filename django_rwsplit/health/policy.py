"""Turn raw probe readings into lag figures and in/out-of-rotation decisions."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from django_rwsplit.conf import Config
from django_rwsplit.health.probes import PrimaryStatus, ReplicaReading
from django_rwsplit.health.reasons import Reason


@dataclass(frozen=True)
class Assessment:
    """Lag of one replica and, if it must not serve reads, why."""

    lag_bytes: int | None
    lag_seconds: float | None
    problem: str | None
    reason: Reason | None = None


class PrimaryHistory:
    """
    Recent ``(time, WAL position)`` samples of the primary.

    Lag in seconds is derived from them rather than from
    ``now() - pg_last_xact_replay_timestamp()``, which grows for ever behind an
    idle primary: a replica that has replayed position R lags by at most the
    time since the primary was last seen at or before R.
    """

    def __init__(self, size: int = 600) -> None:
        self.samples: deque[tuple[float, int]] = deque(maxlen=size)

    def add(self, at: float, lsn: int) -> None:
        """Record that the primary was at ``lsn`` at time ``at``."""
        self.samples.append((at, lsn))

    @property
    def last_lsn(self) -> int | None:
        """Return the newest primary position seen, if any."""
        return self.samples[-1][1] if self.samples else None

    def last_seen_at_or_before(self, lsn: int) -> float | None:
        """Return when the primary was last seen at or before ``lsn``."""
        for at, position in reversed(self.samples):
            if position <= lsn:
                return at
        return None


def assess(
    reading: ReplicaReading,
    primary: PrimaryStatus | None,
    history: PrimaryHistory,
    config: Config,
    *,
    bound_factor: float = 1.0,
    behind_unstreamed_before: bool = False,
    unreplayed_before: bool = False,
) -> Assessment:
    """
    Measure ``reading``'s lag and judge it against the configured bounds.

    ``behind_unstreamed_before`` says the previous round already found this
    replica behind the primary with its WAL receiver not streaming (see
    :func:`behind_unstreamed`); ``unreplayed_before`` that it found the
    primary unreachable and this replica holding WAL it had not replayed
    (see :func:`unreplayed_wal`).
    """
    if not reading.reachable:
        return Assessment(
            None, None, f"unreachable: {reading.error}", Reason.UNREACHABLE
        )
    if reading.in_recovery is not True:
        return Assessment(
            None, None, "not in recovery (promoted?)", Reason.NOT_IN_RECOVERY
        )
    if reading.replay_lsn is None:
        return Assessment(None, None, "lag unknown: no replayed position", Reason.LAG)
    current = primary.current_lsn if primary is not None and primary.reachable else None
    primary_known = current is not None
    if current is not None:
        primary_lsn = current
    else:
        last_known = history.last_lsn
        if last_known is None or reading.replay_lsn < last_known:
            return Assessment(
                None, None, "lag unknown: primary unreachable", Reason.LAG
            )
        if reading.replay_paused:
            # Its WAL receiver may hold more than it shows; nothing bounds it.
            return Assessment(
                None, None, "replay paused, primary unreachable", Reason.LAG
            )
        # WAL received but not replayed came from the primary, so the primary
        # was at least there. Replay normally drains it within moments; found
        # again on the next round, replay is held (an apply delay, a replay
        # conflict) and the replica is behind by that much.
        unreplayed = unreplayed_wal(reading)
        if unreplayed and unreplayed_before:
            return Assessment(
                unreplayed,
                _lag_seconds(reading, primary, history),
                f"{unreplayed} bytes received but not replayed, primary unreachable",
                Reason.LAG,
            )
        primary_lsn = last_known
    lag_bytes = max(0, primary_lsn - reading.replay_lsn)
    if lag_bytes == 0:
        lag_seconds: float | None = 0.0
    else:
        lag_seconds = _lag_seconds(reading, primary, history)
    # A replica that is not streaming but has replayed what the primary had
    # when it was checked is as fresh as it can be. One that is behind leaves
    # on the second such round: a primary that dies between its check and the
    # replicas' (one round) must not eject every replica (the lag bounds
    # below still apply in that round).
    if (
        primary_known
        and behind_unstreamed_before
        and behind_unstreamed(reading, lag_bytes)
    ):
        return Assessment(
            lag_bytes, lag_seconds, "WAL receiver not streaming", Reason.NOT_STREAMING
        )
    limit = config.max_lag_seconds
    if limit is not None:
        if lag_seconds is None:
            return Assessment(lag_bytes, None, "lag unknown", Reason.LAG)
        if lag_seconds > limit * bound_factor:
            return Assessment(
                lag_bytes,
                lag_seconds,
                f"lag {lag_seconds:.2f} s over {limit * bound_factor:g} s",
                Reason.LAG,
            )
    byte_limit = config.max_lag_bytes
    if byte_limit is not None and lag_bytes > byte_limit * bound_factor:
        return Assessment(
            lag_bytes,
            lag_seconds,
            f"lag {lag_bytes} bytes over {byte_limit * bound_factor:g} bytes",
            Reason.LAG,
        )
    return Assessment(lag_bytes, lag_seconds, None)


def unreplayed_wal(reading: ReplicaReading) -> int:
    """Return the bytes of WAL ``reading`` shows received but not yet replayed."""
    if reading.receive_lsn is None or reading.replay_lsn is None:
        return 0
    return max(0, reading.receive_lsn - reading.replay_lsn)


def behind_unstreamed(reading: ReplicaReading, lag_bytes: int | None) -> bool:
    """Return whether ``reading`` is behind the primary and not streaming."""
    return reading.streaming is not True and bool(lag_bytes)


def _lag_seconds(
    reading: ReplicaReading, primary: PrimaryStatus | None, history: PrimaryHistory
) -> float | None:
    """
    Return the tighter of two upper bounds of a lagging replica's lag, if any.

    The primary's history bounds it by the time since the primary was last
    seen at or before the replayed position: accurate to one check interval.
    The last replayed commit bounds it too, as every WAL record not yet
    replayed was written after that commit: close behind a busy primary.
    """
    bounds = []
    seen = history.last_seen_at_or_before(reading.replay_lsn or 0)
    if seen is not None:
        bounds.append(reading.checked_at - seen)
    since_commit = _since_last_replayed_commit(reading, primary)
    if since_commit is not None:
        bounds.append(since_commit)
    return max(0.0, min(bounds)) if bounds else None


def _since_last_replayed_commit(
    reading: ReplicaReading, primary: PrimaryStatus | None
) -> float | None:
    """
    Return the time since the replica's last replayed commit, on our clock.

    The commit's time stamp is on the primary's clock. The primary check
    tells how far ahead that clock runs of ours, taken at its largest so
    the result stays an upper bound whatever the skew. A probe that does not
    report the primary's clock gets the replica's own clock instead (skew
    between replica and primary then shifts the result).
    """
    if reading.last_replay_at is None:
        return None
    if primary is not None and primary.server_time is not None:
        primary_ahead_by = primary.server_time - primary.checked_at
        read_by = reading.checked_at + (reading.latency_ms or 0.0) / 1000.0
        return read_by - (reading.last_replay_at - primary_ahead_by)
    if reading.server_time is not None:
        return reading.server_time - reading.last_replay_at
    return None
