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
