"""Exceptions raised by django-rwsplit."""

from __future__ import annotations

from django.db.utils import OperationalError


class RwsplitError(Exception):
    """Base class of every django-rwsplit error."""

    message_type = "rwsplit error"


class NoReplicaAvailable(RwsplitError, OperationalError):
    """A read needed a replica, none is in rotation and FALLBACK is "error"."""

    message_type = "no replica in rotation"


class PrimaryUnavailable(RwsplitError, OperationalError):
    """The primary cannot take writes: it is unreachable or read-only."""

    message_type = "primary unavailable"


class WriteInterrupted(PrimaryUnavailable):
    """
    The primary went away (or became read-only) while a write was under way.

    ``outcome_unknown`` is True when the write may have been applied (an
    autocommit statement or a COMMIT in flight): check before repeating it.
    False when it certainly was not (the transaction was rolled back).
    """

    message_type = "write interrupted"

    def __init__(self, message: str, *, outcome_unknown: bool) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown
