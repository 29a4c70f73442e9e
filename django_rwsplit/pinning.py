"""Context-local routing state and :func:`pin_primary`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar, overload

from django_rwsplit import observe
from django_rwsplit.blocks import Block, cluster_named
from django_rwsplit.conf import DEFAULT_CLUSTER
from django_rwsplit.pin_reasons import PinReason

_F = TypeVar("_F", bound=Callable[..., Any])

# How many ``pin_primary()`` blocks (every cluster) enclose the current context.
_pin_depth: ContextVar[int] = ContextVar("rwsplit_pin_depth", default=0)
# The clusters pinned by ``pin_primary("name")`` blocks, once per open block.
_cluster_pins: ContextVar[tuple[str, ...]] = ContextVar(
    "rwsplit_cluster_pins", default=()
)


class Scope:
    """
    Routing state of one unit of work: an HTTP request, or a ``read_after`` block.

    ``pinned`` names why reads go to the primary (``None`` when they need not);
    ``replica`` is the replica chosen for the scope's first read, kept for
    monotonic reads; ``min_lsn`` is the WAL position a replica must have
    replayed before it may serve this scope; ``request_atomic_depth`` is the
    number of primary ``atomic()`` blocks open while the view runs in the
    transaction of ``ATOMIC_REQUESTS`` (reads there may use replicas until
    the request writes). This is a private API.

    A scope is the default cluster's; the routing state of each other
    cluster (``RWSPLIT["CLUSTERS"]``) is a scope of its own, made on first
    use by :meth:`of`; ``wrote`` is true once any cluster was written, and
    ``written`` names them.
    """

    __slots__ = (
        "pinned",
        "shared_pin",
        "others",
        "written",
        "replica",
        "min_lsn",
        "token_at",
        "wrote",
        "request_atomic_depth",
        "before_first_read",
        "causal_deadline",
    )

    def __init__(
        self,
        pinned: PinReason | None = None,
        min_lsn: int | None = None,
        token_at: float | None = None,
    ) -> None:
        self.pinned = pinned
        # A pin of the whole unit of work (an unsafe HTTP method): every
        # cluster's scope starts with it.
        self.shared_pin: PinReason | None = None
        self.others: dict[str, Scope] | None = None
        self.written: tuple[str, ...] = ()
        self.replica: str | None = None
        self.min_lsn = min_lsn
        self.token_at = token_at
        self.wrote = False
        # With ATOMIC_REQUESTS: how many atomic blocks are open on the primary
        # inside the request's own (the view's), else None.
        self.request_atomic_depth: int | None = None
        # Called with the scope before a read picks a replica, until it
        # returns True (done).
        self.before_first_read: Callable[[Scope], bool] | None = None
        # time.monotonic() past which CAUSAL_WAIT no longer waits for any
        # replica in this scope (set by the first wait).
        self.causal_deadline: float | None = None

    def of(self, cluster: str) -> Scope:
        """Return the routing state of ``cluster`` in this unit of work."""
        if cluster == DEFAULT_CLUSTER:
            return self
        others = self.others
        if others is None:
            others = self.others = {}
        scope = others.get(cluster)
        if scope is None:
            scope = others[cluster] = Scope(pinned=self.shared_pin)
        return scope

    def pin_everywhere(self, reason: PinReason) -> None:
        """Pin every cluster's reads of this unit of work (``reason``)."""
        self.shared_pin = self.shared_pin or reason
        self.pinned = self.pinned or reason
        for scope in (self.others or {}).values():
            scope.pinned = scope.pinned or reason


_scope: ContextVar[Scope | None] = ContextVar("rwsplit_scope", default=None)
# When (time.monotonic()) the current context (a thread, an asyncio task)
# last wrote the default cluster outside any scope; 0.0 when it never did.
_unscoped_write: ContextVar[float] = ContextVar("rwsplit_unscoped_write", default=0.0)
# The same for the other clusters, by name.
_unscoped_writes: ContextVar[dict[str, float]] = ContextVar("rwsplit_unscoped_writes")


def current_scope() -> Scope | None:
    """Return the routing scope of the current context, if any."""
    return _scope.get()


# The same reads, bound once, for the router's hot path.
get_scope = _scope.get
get_pin_depth = _pin_depth.get
get_cluster_pins = _cluster_pins.get


_on_activate: list[Callable[[], None]] = []


def on_activate(hook: Callable[[], None]) -> None:
    """Call ``hook`` (no arguments) each time a scope is activated."""
    if hook not in _on_activate:
        _on_activate.append(hook)


def activate(scope: Scope) -> Token[Scope | None]:
    """
    Make ``scope`` the current context's routing scope; return a reset token.

    Like Django's ``timezone.activate``, but give the token to
    :func:`deactivate` when the unit of work ends, also when it fails.
    """
    for hook in _on_activate:
        hook()
    return _scope.set(scope)


def deactivate(token: Token[Scope | None]) -> None:
    """Restore the routing scope that was current before :func:`activate`."""
    _scope.reset(token)


@contextmanager
def scoped(scope: Scope) -> Iterator[Scope]:
    """Run the block in routing scope ``scope`` (then restore the previous one)."""
    token = activate(scope)
    try:
        yield scope
    finally:
        deactivate(token)


# For the router's hot path.
get_unscoped_write = _unscoped_write.get
get_unscoped_writes = _unscoped_writes.get


def unscoped_write_at(cluster: str = DEFAULT_CLUSTER) -> float:
    """When the current context last wrote ``cluster`` outside any scope (0.0)."""
    if cluster == DEFAULT_CLUSTER:
        return _unscoped_write.get()
    return _unscoped_writes.get({}).get(cluster, 0.0)


def wrote_unscoped(window: float, cluster: str = DEFAULT_CLUSTER) -> bool:
    """Return whether the current context wrote outside any scope in ``window`` s."""
    at = unscoped_write_at(cluster)
    return bool(at) and time.monotonic() - at < window


def unscoped_writes(window: float) -> tuple[str, ...]:
    """The clusters the current context wrote outside any scope in ``window`` s."""
    names = [DEFAULT_CLUSTER, *_unscoped_writes.get({})]
    return tuple(name for name in names if wrote_unscoped(window, name))


def is_pinned(cluster: str = DEFAULT_CLUSTER) -> bool:
    """Return whether reads of ``cluster`` in the current context go to the primary."""
    if _pin_depth.get() or cluster in _cluster_pins.get():
        return True
    scope = _scope.get()
    return scope is not None and scope.of(cluster).pinned is not None


def forget_unscoped_write() -> None:
    """
    Unpin the current context from its last write outside any scope.

    For a long-lived worker between two units of work that are not scopes
    (a loop of jobs, one test after another): the next reads use replicas.
    """
    _unscoped_write.set(0.0)
    _unscoped_writes.set({})


def note_write(cluster: str = DEFAULT_CLUSTER) -> None:
    """Record that the current context wrote to ``cluster``'s primary."""
    scope = _scope.get()
    if scope is None:
        # Outside any scope the context's reads go to the primary for the
        # pin window (the router reads this), then return to the replicas.
        if cluster == DEFAULT_CLUSTER:
            _unscoped_write.set(time.monotonic())
        else:
            _unscoped_writes.set(
                {**_unscoped_writes.get({}), cluster: time.monotonic()}
            )
        return
    scope.wrote = True
    if cluster not in scope.written:
        scope.written = (*scope.written, cluster)
    target = scope.of(cluster)
    if target.pinned is None:
        target.pinned = PinReason.WRITE
        observe.pin(PinReason.WRITE)


class PinPrimary(Block):
    """
    Send every read to the primary database inside the block.

    Use it as a context manager (``with pin_primary():``) or as a decorator
    (``@pin_primary`` or ``@pin_primary()``) on plain and ``async def``
    functions. Blocks nest: reads return to replicas only when the outermost
    block exits, also when it exits with an exception.

    No state is kept on the instance: the nesting depth lives in a context
    variable, so one decorated function may run in many threads and asyncio
    tasks at once, and a pin in one of them is never seen by another.

    ``cluster`` names the one cluster to pin (``RWSPLIT["CLUSTERS"]``, or
    ``"default"``); without it every cluster is pinned.
    """

    def __init__(self, cluster: str | None = None) -> None:
        self.cluster = cluster

    def __enter__(self) -> None:
        cluster = self.cluster
        if cluster is not None:
            pins = _cluster_pins.get()
            if not pins and not _pin_depth.get():
                observe.pin(PinReason.PIN_PRIMARY)
            _cluster_pins.set((*pins, cluster))
            return
        depth = _pin_depth.get()
        if not depth:
            observe.pin(PinReason.PIN_PRIMARY)
        _pin_depth.set(depth + 1)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cluster = self.cluster
        if cluster is not None:
            pins = list(_cluster_pins.get())
            if cluster in pins:
                del pins[len(pins) - 1 - pins[::-1].index(cluster)]
            _cluster_pins.set(tuple(pins))
            return
        _pin_depth.set(max(_pin_depth.get() - 1, 0))


@overload
def pin_primary(func: None = None) -> PinPrimary: ...
@overload
def pin_primary(func: str) -> PinPrimary: ...
@overload
def pin_primary(func: _F) -> _F: ...
def pin_primary(func: _F | str | None = None) -> PinPrimary | _F:
    """
    Pin reads to the primary: a context manager, or a decorator.

    ``pin_primary()`` pins every cluster; ``pin_primary("analytics")`` pins
    the cluster of that name only (an unknown name raises ``ValueError``).
    """
    if func is None:
        return PinPrimary()
    if isinstance(func, str):
        # With one cluster, pinning it is pinning everything.
        return PinPrimary(cluster_named("pin_primary", func))
    return PinPrimary()(func)
