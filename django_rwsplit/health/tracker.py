"""Per-process rotation state: which replicas serve reads, with hysteresis."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

from django_rwsplit.conf import Config
from django_rwsplit.health.document import HealthSnapshot, ReplicaStatus
from django_rwsplit.health.policy import (
    PrimaryHistory,
    assess,
    behind_unstreamed,
    unreplayed_wal,
)
from django_rwsplit.health.probes import PrimaryStatus, ReplicaReading, format_lsn
from django_rwsplit.health.reasons import Reason
from django_rwsplit.health.rotation import Rotation

__all__ = ["HealthSnapshot", "ReplicaStatus", "Tracker", "Transition", "not_visible"]


def not_visible(lsn: int) -> str:
    """Why a replica is held out: a visible commit it has not applied."""
    return f"has not applied a visible commit (at {format_lsn(lsn)})"


@dataclass(frozen=True)
class Transition:
    """A replica left (``admitted`` False) or rejoined the rotation."""

    alias: str
    admitted: bool
    reason: str
    lag_seconds: float | None
    lag_bytes: int | None
    # The kind of ``reason`` when a replica left (None when it rejoined).
    kind: Reason | None = None
    # Admitted for the first time in this process (not "back" in rotation).
    first: bool = False


@dataclass
class _ReplicaRecord:
    endpoint: str
    in_rotation: bool = False
    ever_admitted: bool = False
    good_streak: int = 0
    # Why it is out (None while in rotation, or before a failed check).
    kind: Reason | None = None
    # The last round found it behind a reachable primary, not streaming.
    behind_unstreamed: bool = False
    # The last round found the primary unreachable and this replica holding
    # WAL it had not replayed.
    unreplayed: bool = False
    status: ReplicaStatus | None = None
    # A commit made in visible_on_replicas() it had not applied in time: it
    # serves no read until it has replayed this position.
    floor: int | None = None


class Tracker:
    """
    Decide, round after round of readings, which replicas are in rotation.

    A replica is out until a check passes; it leaves on the first failed
    check or exceeded bound, and returns after ``READMIT_AFTER`` consecutive
    checks with its lag at most half the bound, so it does not flap around
    the threshold. Thread-safe.
    """

    def __init__(
        self, config: Config, endpoints: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.history = PrimaryHistory()
        self.primary: PrimaryStatus | None = None
        self._lock = threading.Lock()
        self._states = {
            alias: _ReplicaRecord(endpoint=(endpoints or {}).get(alias, ""))
            for alias in config.replicas
        }
        self.rotation = Rotation({})
        # Called with each new rotation (the process state keeps a copy).
        self.on_rotation: Callable[[Rotation], None] | None = None

    def apply(
        self, primary: PrimaryStatus | None, readings: Sequence[ReplicaReading]
    ) -> list[Transition]:
        """Take one round of readings; return the transitions it caused."""
        transitions: list[Transition] = []
        with self._lock:
            if primary is not None:
                self.primary = primary
            for reading in readings:
                state = self._states.get(reading.alias)
                if state is None:
                    continue
                transition = self._take(state, reading, primary)
                if transition is not None:
                    transitions.append(transition)
            if primary is not None and primary.reachable and primary.current_lsn:
                self.history.add(primary.checked_at, primary.current_lsn)
            self._rebuild()
        return transitions

    def _take(
        self,
        state: _ReplicaRecord,
        reading: ReplicaReading,
        primary: PrimaryStatus | None,
    ) -> Transition | None:
        before = state.behind_unstreamed
        verdict = assess(
            reading,
            primary,
            self.history,
            self.config,
            behind_unstreamed_before=before,
            unreplayed_before=state.unreplayed,
        )
        calm = assess(
            reading,
            primary,
            self.history,
            self.config,
            bound_factor=0.5,
            behind_unstreamed_before=before,
            unreplayed_before=state.unreplayed,
        )
        primary_up = primary is not None and primary.reachable
        state.unreplayed = not primary_up and unreplayed_wal(reading) > 0
        state.behind_unstreamed = primary_up and behind_unstreamed(
            reading, verdict.lag_bytes
        )
        if state.floor is not None:
            if reading.replay_lsn is not None and reading.replay_lsn >= state.floor:
                state.floor = None
            elif verdict.problem is None:
                verdict = replace(
                    verdict,
                    problem=not_visible(state.floor),
                    reason=Reason.NOT_VISIBLE,
                )
        transition = None
        state.kind = verdict.reason
        if verdict.problem is not None:
            state.good_streak = 0
            if state.in_rotation:
                state.in_rotation = False
                transition = Transition(
                    reading.alias,
                    False,
                    verdict.problem,
                    verdict.lag_seconds,
                    verdict.lag_bytes,
                    verdict.reason,
                )
        elif not state.in_rotation:
            state.good_streak = state.good_streak + 1 if calm.problem is None else 0
            if (
                not state.ever_admitted
                or state.good_streak >= self.config.readmit_after
            ):
                first = not state.ever_admitted
                state.in_rotation = state.ever_admitted = True
                transition = Transition(
                    reading.alias,
                    True,
                    "caught up",
                    verdict.lag_seconds,
                    verdict.lag_bytes,
                    first=first,
                )
        state.status = ReplicaStatus(
            alias=reading.alias,
            endpoint=reading.endpoint,
            in_rotation=state.in_rotation,
            reachable=reading.reachable,
            in_recovery=reading.in_recovery,
            replay_paused=reading.replay_paused,
            streaming=reading.streaming,
            replay_lsn=reading.replay_lsn,
            lag_seconds=verdict.lag_seconds,
            lag_bytes=verdict.lag_bytes,
            latency_ms=reading.latency_ms,
            error=verdict.problem,
            checked_at=reading.checked_at,
            query_ms=reading.query_ms,
            active_backends=reading.active_backends,
            standby_name=reading.standby_name,
        )
        return transition

    def hold(self, alias: str, lsn: int) -> Transition | None:
        """Keep ``alias`` out until a round finds it has replayed ``lsn``."""
        with self._lock:
            state = self._states.get(alias)
            if state is None:
                return None
            state.floor = lsn if state.floor is None else max(state.floor, lsn)
        return self.eject(alias, not_visible(lsn), Reason.NOT_VISIBLE)

    def eject(
        self, alias: str, reason: str, kind: Reason | None = None
    ) -> Transition | None:
        """Take ``alias`` out of rotation now (a request could not reach it)."""
        kind = kind or Reason.of_text(reason)
        with self._lock:
            state = self._states.get(alias)
            if state is None or not state.in_rotation:
                return None
            state.in_rotation = False
            state.good_streak = 0
            state.kind = kind
            if state.status is not None:
                state.status = ReplicaStatus(
                    **{**asdict(state.status), "in_rotation": False, "error": reason}
                )
            self._rebuild()
        return Transition(alias, False, reason, None, None, kind)

    def _rebuild(self) -> None:
        """A new rotation only when membership changed: the cycle goes on."""
        weights = {
            alias: weight
            for alias, weight in self.config.replicas.items()
            if self._states[alias].in_rotation
        }
        if weights != self.rotation.weights:
            self.rotation = Rotation(weights)
            if self.on_rotation is not None:
                self.on_rotation(self.rotation)

    def unreachable(self, alias: str) -> bool:
        """Return whether ``alias`` was last found unreachable (not merely lagging)."""
        state = self._states.get(alias)
        return bool(
            state is not None and state.kind is not None and state.kind.unreachable
        )

    def status(self, alias: str) -> ReplicaStatus | None:
        """Return the latest status of ``alias`` (None before its first check)."""
        state = self._states.get(alias)
        return state.status if state else None

    def snapshot(self) -> HealthSnapshot:
        """Return the current state of the primary and every replica."""
        with self._lock:
            replicas = tuple(
                state.status
                or ReplicaStatus(
                    alias=alias,
                    endpoint=state.endpoint,
                    in_rotation=False,
                    error="not checked yet",
                )
                for alias, state in self._states.items()
            )
            return HealthSnapshot(self.primary, replicas)
