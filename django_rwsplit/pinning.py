"""Context-local routing state and :func:`pin_primary`."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar, overload

from django_rwsplit import observe

_F = TypeVar("_F", bound=Callable[..., Any])

# How many ``pin_primary`` blocks enclose the current context.
_pin_depth: ContextVar[int] = ContextVar("rwsplit_pin_depth", default=0)


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
    """

    __slots__ = (
        "pinned",
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
        pinned: str | None = None,
        min_lsn: int | None = None,
        token_at: float | None = None,
    ) -> None:
        self.pinned = pinned
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


_scope: ContextVar[Scope | None] = ContextVar("rwsplit_scope", default=None)
# When (time.monotonic()) the current context (a thread, an asyncio task)
# last wrote outside any scope; 0.0 when it never did.
_unscoped_write: ContextVar[float] = ContextVar("rwsplit_unscoped_write", default=0.0)


def current_scope() -> Scope | None:
    """Return the routing scope of the current context, if any."""
    return _scope.get()


# The same two reads, bound once, for the router's hot path.
get_scope = _scope.get
get_pin_depth = _pin_depth.get


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


def wrote_unscoped(window: float) -> bool:
    """Return whether the current context wrote outside any scope in ``window`` s."""
    at = _unscoped_write.get()
    return bool(at) and time.monotonic() - at < window


def is_pinned() -> bool:
    """Return whether reads in the current context must go to the primary."""
    if _pin_depth.get():
        return True
    scope = _scope.get()
    return scope is not None and scope.pinned is not None


def forget_unscoped_write() -> None:
    """
    Unpin the current context from its last write outside any scope.

    For a long-lived worker between two units of work that are not scopes
    (a loop of jobs, one test after another): the next reads use replicas.
    """
    _unscoped_write.set(0.0)


def note_write() -> None:
    """Record that the current context wrote to the primary."""
    scope = _scope.get()
    if scope is None:
        # Outside any scope the context's reads go to the primary for the
        # pin window (the router reads this), then return to the replicas.
        _unscoped_write.set(time.monotonic())
        return
    scope.wrote = True
    if scope.pinned is None:
        scope.pinned = "write"
        observe.pin("write")


class PinPrimary:
    """
    Send every read to the primary database inside the block.

    Use it as a context manager (``with pin_primary():``) or as a decorator
    (``@pin_primary`` or ``@pin_primary()``) on plain and ``async def``
    functions. Blocks nest: reads return to replicas only when the outermost
    block exits, also when it exits with an exception.

    No state is kept on the instance: the nesting depth lives in a context
    variable, so one decorated function may run in many threads and asyncio
    tasks at once, and a pin in one of them is never seen by another.
    """

    def __enter__(self) -> None:
        depth = _pin_depth.get()
        if not depth:
            observe.pin("pin_primary")
        _pin_depth.set(depth + 1)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _pin_depth.set(max(_pin_depth.get() - 1, 0))

    def __call__(self, func: _F) -> _F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_inner(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return async_inner  # type: ignore [return-value]

        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return inner  # type: ignore [return-value]


@overload
def pin_primary(func: None = None) -> PinPrimary: ...
@overload
def pin_primary(func: _F) -> _F: ...
def pin_primary(func: _F | None = None) -> PinPrimary | _F:
    """Pin reads to the primary: a context manager, or a decorator."""
    if func is None:
        return PinPrimary()
    return PinPrimary()(func)
