"""
Read-your-writes tokens: the primary's WAL position after a context's writes.

A token is a signed, timestamped string. It travels in the pin cookie, or by
hand (a task argument) to :func:`read_after`, which lets reads go to a
replica only once that replica has replayed the position.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.core import signing
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections

from django_rwsplit import pinning
from django_rwsplit.conf import Config, get_config
from django_rwsplit.health.probes import format_lsn, parse_lsn

SALT = "django_rwsplit.pin"
MAX_TOKEN_LENGTH = 200
# Tokens stamped further in the future than this are forged or from a broken
# clock; either way they are ignored.
MAX_CLOCK_SKEW = 5.0
TIME_PAYLOAD = "t"


@dataclass(frozen=True)
class Token:
    """A decoded pin: ``lsn`` is None for a plain time window."""

    lsn: int | None
    issued_at: float


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT)


def encode(lsn: int | None) -> str:
    """Return a signed token for ``lsn`` (or a time-only pin for None)."""
    return _signer().sign(TIME_PAYLOAD if lsn is None else format_lsn(lsn))


def decode(value: object, config: Config) -> Token | None:
    """Return the token in ``value``, or None if it is forged, stale or malformed."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN_LENGTH:
        return None
    signer = _signer()
    try:
        payload = signer.unsign(value, max_age=timedelta(seconds=config.sticky_seconds))
        issued_at = float(signing.b62_decode(value.rsplit(signer.sep, 2)[1]))
    except (signing.BadSignature, ValueError, IndexError):
        return None
    if issued_at > time.time() + MAX_CLOCK_SKEW:
        return None
    if payload == TIME_PAYLOAD:
        return Token(None, issued_at)
    try:
        lsn = parse_lsn(payload)
    except ValueError:
        return None
    return None if lsn is None else Token(lsn, issued_at)


def apply(token: Token, scope: pinning.Scope, config: Config) -> None:
    """Make ``scope`` read after ``token`` (the later of it and what it had)."""
    if token.lsn is None or config.consistency != "lsn":
        scope.pinned = scope.pinned or "cookie"
    elif scope.min_lsn is None or token.lsn > scope.min_lsn:
        scope.min_lsn = token.lsn
        scope.token_at = token.issued_at
        scope.replica = None  # chosen before the token was known: choose again


def primary_position(using: str) -> int | None:
    """Return the primary's current WAL position (None if it cannot be read)."""
    try:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            row = cursor.fetchone()
    except Exception:  # noqa: BLE001 - the caller falls back to a time pin
        return None
    return parse_lsn(row[0]) if row else None


def current_token() -> str | None:
    """
    Return a token for the position after this context's writes, or None.

    Pass it to a task (for example a Celery task enqueued right after a write)
    and read inside ``with read_after(token):`` there. Outside any scope, a
    write counts for ``STICKY_SECONDS``. From async code, use
    :func:`acurrent_token` (this raises ``SynchronousOnlyOperation`` there in
    ``"lsn"`` mode rather than return a weaker token).
    """
    config = get_config()
    scope = pinning.current_scope()
    if scope is not None:
        wrote = scope.wrote
    else:
        wrote = pinning.wrote_unscoped(config.sticky_seconds)
    if not wrote:
        return None
    if config.consistency != "lsn":
        return encode(None)
    if _in_event_loop():
        raise SynchronousOnlyOperation(
            "current_token() reads the primary's WAL position, which cannot be "
            "done from async code: use 'await acurrent_token()' there."
        )
    return encode(primary_position(config.primary))


async def acurrent_token() -> str | None:
    """:func:`current_token` for async code (the primary is read in a thread)."""
    return await sync_to_async(current_token)()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@contextmanager
def read_after(token: str | None) -> Iterator[None]:
    """
    Send reads inside the block to replicas that have replayed ``token``.

    Replicas that have not reached it are skipped; if none has, reads go to
    the primary. A forged, expired or malformed token (or None) changes
    nothing. The previous routing scope is restored on exit.
    """
    config = get_config()
    decoded = decode(token, config) if token is not None else None
    if decoded is None:
        yield
        return
    with pinning.scoped(scope_after(decoded)):
        yield


def scope_after(token: Token) -> pinning.Scope:
    """Return a new scope that reads after ``token`` (a time pin: the primary)."""
    return pinning.Scope(
        pinned="token" if token.lsn is None else None,
        min_lsn=token.lsn,
        token_at=token.issued_at,
    )


def replica_position(alias: str) -> int | None:
    """Return the WAL position replica ``alias`` has replayed, asking it directly."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
            row = cursor.fetchone()
    except Exception:  # noqa: BLE001 - an unreadable replica has not reached it
        return None
    return parse_lsn(row[0]) if row else None
