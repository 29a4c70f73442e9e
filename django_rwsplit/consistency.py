"""
Read-your-writes tokens: the primary's WAL position after a context's writes.

A token is a signed, timestamped string. It travels in the pin cookie, or by
hand (a task argument) to :func:`read_after`, which lets reads go to a
replica only once that replica has replayed the position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.core import signing
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections

from django_rwsplit import pinning
from django_rwsplit.conf import DEFAULT_CLUSTER, Config, get_config
from django_rwsplit.health import lost_writes
from django_rwsplit.health.probes import format_lsn, parse_lsn
from django_rwsplit.pin_reasons import PinReason

logger = logging.getLogger("django_rwsplit")

SALT = "django_rwsplit.pin"
# A token holds one position per cluster written (a few dozen characters each).
MAX_TOKEN_LENGTH = 600
# Tokens stamped further in the future than this are forged or from a broken
# clock; either way they are ignored.
MAX_CLOCK_SKEW = 5.0
TIME_PAYLOAD = "t"
# Between the positions of several clusters, and between a cluster and its.
ENTRY_SEP = ","
NAME_SEP = ":"
# Between a position and the timeline it was written on (``0/3000060@2``).
TIMELINE_SEP = "@"
TIMELINE_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class Token:
    """
    A decoded pin: ``lsn`` is the default cluster's position (None: a time pin).

    ``positions`` holds, for a token of several clusters, each cluster's
    position (None: a time pin of that cluster); None means the default
    cluster alone, at ``lsn``.
    """

    lsn: int | None
    issued_at: float
    positions: Mapping[str, int | None] | None = None
    # The timeline each cluster's position was written on, where known.
    timelines: Mapping[str, int] | None = None

    def entries(self) -> Mapping[str, int | None]:
        """Each cluster's position in this token (None: a time pin)."""
        if self.positions is None:
            return {DEFAULT_CLUSTER: self.lsn}
        return self.positions


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT)


def encode(lsn: int | None) -> str:
    """Return a signed token for ``lsn`` (or a time-only pin for None)."""
    return encode_positions({DEFAULT_CLUSTER: lsn})


def encode_positions(
    positions: Mapping[str, int | None], timelines: Mapping[str, int] | None = None
) -> str:
    """
    Return a signed token of each cluster's position (None: a time pin).

    ``timelines`` names the timeline a position was written on, where known.
    """
    entries = []
    for name, lsn in positions.items():
        value = TIME_PAYLOAD if lsn is None else format_lsn(lsn)
        timeline = (timelines or {}).get(name)
        if lsn is not None and timeline is not None:
            value = f"{value}{TIMELINE_SEP}{timeline}"
        entries.append(value if name == DEFAULT_CLUSTER else f"{name}{NAME_SEP}{value}")
    return _signer().sign(ENTRY_SEP.join(entries))


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
    positions, timelines = _positions(payload, config)
    return _token(positions, issued_at, timelines) if positions else None


def _token(
    positions: dict[str, int | None],
    issued_at: float,
    timelines: dict[str, int] | None = None,
) -> Token:
    """The Token of ``positions`` (a default-only one keeps ``positions`` None)."""
    timelines = timelines or None
    if list(positions) == [DEFAULT_CLUSTER]:
        return Token(positions[DEFAULT_CLUSTER], issued_at, None, timelines)
    return Token(positions.get(DEFAULT_CLUSTER), issued_at, positions, timelines)


def _positions(
    payload: str, config: Config
) -> tuple[dict[str, int | None], dict[str, int]]:
    """
    Each known cluster's position in ``payload``, and its timeline where given.

    Both are empty if any entry is garbage.
    """
    positions: dict[str, int | None] = {}
    timelines: dict[str, int] = {}
    for entry in payload.split(ENTRY_SEP):
        name, sep, value = entry.rpartition(NAME_SEP)
        name = name if sep else DEFAULT_CLUSTER
        value, at, timeline = value.partition(TIMELINE_SEP)
        if at and not (timeline.isdigit() and 0 < int(timeline) <= TIMELINE_MAX):
            return {}, {}
        if value == TIME_PAYLOAD:
            if at:
                return {}, {}
            lsn = None
        else:
            try:
                lsn = parse_lsn(value)
            except ValueError:
                return {}, {}
            if lsn is None:
                return {}, {}
        if name == DEFAULT_CLUSTER or name in config.clusters:
            positions[name] = lsn  # a cluster since removed is ignored
            if at:
                timelines[name] = int(timeline)
    return positions, timelines


def merge(tokens: Sequence[Token]) -> Token | None:
    """
    The token that honours every one of ``tokens``, cluster by cluster.

    For each cluster: a time pin wins over a position, else the furthest
    position; the merged token was issued at the latest time.
    """
    if not tokens:
        return None
    if len(tokens) == 1:
        return tokens[0]
    positions: dict[str, int | None] = {}
    timelines: dict[str, int] = {}
    for token in tokens:
        for name, lsn in token.entries().items():
            timeline = (token.timelines or {}).get(name)
            if name not in positions:
                positions[name] = lsn
            else:
                known = positions[name]
                positions[name] = (
                    None if known is None or lsn is None else max(known, lsn)
                )
            # The furthest position's timeline (the later one on a tie).
            if lsn is not None and lsn == positions[name] and timeline is not None:
                timelines[name] = max(timeline, timelines.get(name, timeline))
    return _token(positions, max(token.issued_at for token in tokens), timelines)


def apply(token: Token, scope: pinning.Scope, config: Config) -> None:
    """
    Make ``scope`` read after ``token`` (the later of it and what it had).

    A position on a timeline that the primary's timeline does not hold (a
    write lost in a failover) sends the scope's reads to the primary, and is
    reported (:func:`django_rwsplit.health.lost_writes.check`).
    """
    for name, lsn in token.entries().items():
        target = scope.of(name)
        if _lost(token, name, lsn):
            target.pinned = PinReason.LOST_WRITE
        elif lsn is None or config.consistency != "lsn":
            target.pinned = target.pinned or PinReason.COOKIE
        elif target.min_lsn is None or lsn > target.min_lsn:
            target.min_lsn = lsn
            target.token_at = token.issued_at
            target.replica = None  # chosen before the token was known: choose again


def written_token(written: Sequence[str], config: Config) -> str:
    """
    Return the token after writes to the clusters ``written``.

    In ``"lsn"`` mode each cluster's primary is asked for its WAL position
    (one query per cluster; a primary that does not answer gives a time pin
    of its cluster); in ``"time"`` mode every cluster gets a time pin.
    """
    positions: dict[str, int | None] = {}
    timelines: dict[str, int] = {}
    for name in written:
        try:
            cluster = config.cluster(name)
        except KeyError:
            continue
        lsn = timeline = None
        if config.consistency == "lsn":
            lsn, timeline = position_and_timeline(cluster.primary)
        positions[name] = lsn
        if timeline is not None:
            timelines[name] = timeline
    return encode_positions(positions or {DEFAULT_CLUSTER: None}, timelines)


# The primary's position, and its timeline: its current WAL file's.
POSITION_SQL = (
    "SELECT pg_current_wal_lsn()::text,"
    " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
)


def position_and_timeline(using: str) -> tuple[int | None, int | None]:
    """The primary's current WAL position and timeline (None: not read)."""
    try:
        with connections[using].cursor() as cursor:
            cursor.execute(POSITION_SQL)
            row = cursor.fetchone()
    except Exception as error:  # noqa: BLE001 - the caller falls back to a time pin
        logger.warning(
            "The primary %r did not give its WAL position (%s: %s); the token "
            "pins the client's reads to the primary for STICKY_SECONDS instead.",
            using,
            type(error).__name__,
            str(error).splitlines()[0][:200] if str(error) else "",
        )
        return None, None
    if not row:
        return None, None
    return parse_lsn(row[0]), int(row[1]) if row[1] is not None else None


def primary_position(using: str) -> int | None:
    """Return the primary's current WAL position (None if it cannot be read)."""
    return position_and_timeline(using)[0]


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
    written = written_clusters(config)
    if not written:
        return None
    if config.consistency == "lsn" and _in_event_loop():
        raise SynchronousOnlyOperation(
            "current_token() reads the primary's WAL position, which cannot be "
            "done from async code: use 'await acurrent_token()' there."
        )
    return written_token(written, config)


def written_clusters(config: Config) -> tuple[str, ...]:
    """The clusters the current context wrote (in its scope, or recently)."""
    scope = pinning.current_scope()
    if scope is not None:
        return scope.written if scope.wrote else ()
    return pinning.unscoped_writes(config.sticky_seconds)


def time_token(written: Sequence[str]) -> str:
    """A token pinning the clusters ``written`` for ``STICKY_SECONDS`` (no position)."""
    return encode_positions(dict.fromkeys(written or (DEFAULT_CLUSTER,), None))


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
    scope = pinning.Scope()
    for name, lsn in token.entries().items():
        target = scope.of(name)
        if _lost(token, name, lsn):
            target.pinned = PinReason.LOST_WRITE
            continue
        target.pinned = PinReason.TOKEN if lsn is None else None
        target.min_lsn = lsn
        target.token_at = token.issued_at
    return scope


def _lost(token: Token, cluster: str, lsn: int | None) -> bool:
    """Whether ``token``'s write to ``cluster`` was lost in a failover (reported)."""
    timeline = (token.timelines or {}).get(cluster)
    if lsn is None or timeline is None:
        return False
    return lost_writes.check(cluster, timeline, lsn)


def replica_position(alias: str) -> int | None:
    """Return the WAL position replica ``alias`` has replayed, asking it directly."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
            row = cursor.fetchone()
    except Exception:  # noqa: BLE001 - an unreadable replica has not reached it
        return None
    return parse_lsn(row[0]) if row else None
