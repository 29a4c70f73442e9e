"""Why a read goes to the primary: the pin reasons, one typed name each."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["PinReason"]


class PinReason(StrEnum):
    """
    Why reads go to the primary (a scope's ``pinned``, a metric's label).

    Members are strings: their values are the labels that metrics and the
    status page have always shown.
    """

    #: A POST, PUT, PATCH or DELETE request (``PIN_UNSAFE_METHODS``).
    UNSAFE_METHOD = "unsafe_method"
    #: The request, task or context wrote (outside a scope: for
    #: ``STICKY_SECONDS``).
    WRITE = "write"
    #: The primary connection is inside ``atomic()``.
    TRANSACTION = "transaction"
    #: Inside ``pin_primary()``.
    PIN_PRIMARY = "pin_primary"
    #: A read-your-writes position that no replica in rotation has replayed,
    #: or a time-only task token.
    TOKEN = "token"
    #: A time pin from the client (cookie or header), ``"time"`` consistency.
    COOKIE = "cookie"
    #: The cluster has no replicas configured.
    NO_REPLICAS = "no_replicas"
    #: A task whose policy is ``"primary"``, or whose token could not be read.
    TASK_PRIMARY = "task_primary"
    #: No replica is in rotation (``FALLBACK = "primary"``).
    FALLBACK = "fallback"
    #: The replicas are the test runner's mirrors of the primary
    #: (``ROUTE_TEST_MIRRORS_TO_PRIMARY``).
    TEST_MIRROR = "test_mirror"
    #: The client's token names a write the primary's timeline does not hold
    #: (lost in a failover, :mod:`django_rwsplit.health.lost_writes`).
    LOST_WRITE = "lost_write"
