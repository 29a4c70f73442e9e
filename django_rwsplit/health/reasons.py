"""Why a replica is out of rotation: one vocabulary for policy, tracker and metrics."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """
    The kind of a replica's problem; the human-readable text goes beside it.

    The values are the ``reason`` labels of ``rwsplit_replica_ejections_total``.
    """

    LAG = "lag"
    UNREACHABLE = "unreachable"
    NOT_IN_RECOVERY = "not_in_recovery"
    NOT_STREAMING = "not_streaming"
    CONNECTION_FAILED = "connection_failed"
    #: It had not applied a commit made in visible_on_replicas() in time.
    NOT_VISIBLE = "not_visible"
    OTHER = "other"

    @property
    def unreachable(self) -> bool:
        """Whether the replica could not be reached at all (not merely lagging)."""
        return self in (Reason.UNREACHABLE, Reason.CONNECTION_FAILED)

    @classmethod
    def of_text(cls, text: object) -> Reason:
        """
        Classify a free-text reason (from a receiver's own ``eject`` call).

        The library passes :class:`Reason` values along with its texts; this
        is for text that arrives without one.
        """
        lowered = str(text or "").strip().lower()
        for prefix, reason in _PREFIXES:
            if lowered.startswith(prefix):
                return reason
        return cls.OTHER


_PREFIXES = (
    ("lag", Reason.LAG),
    ("unreachable", Reason.UNREACHABLE),
    ("not in recovery", Reason.NOT_IN_RECOVERY),
    ("wal receiver not streaming", Reason.NOT_STREAMING),
    ("connection failed", Reason.CONNECTION_FAILED),
    ("has not applied a visible commit", Reason.NOT_VISIBLE),
)
