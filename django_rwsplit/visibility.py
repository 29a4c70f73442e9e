"""
``visible_on_replicas()``: writes that every reader sees once their commit returns.

Inside the block, every write committed on a cluster's primary returns only
once every replica in that cluster's rotation has applied it (PostgreSQL's
``synchronous_commit = remote_apply`` for the replicas the primary reports
as synchronous standbys, waiting on replay positions for the others), or
``RWSPLIT["VISIBLE_WAIT"]`` has passed; a replica that has not applied it by
then serves no read until it has (:mod:`django_rwsplit.health.replay_wait`).
The engine does the waiting, at each commit
(:mod:`django_rwsplit.backends.postgresql.visible_commits`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar, overload

from django_rwsplit.blocks import Block, cluster_named
from django_rwsplit.conf import DEFAULT_CLUSTER

__all__ = ["VisibleOnReplicas", "active", "visible_on_replicas", "wanted"]

_F = TypeVar("_F", bound=Callable[..., Any])

# The open blocks of the current context, innermost last: a cluster's name,
# or None for a block of every cluster.
_blocks: ContextVar[tuple[str | None, ...]] = ContextVar(
    "rwsplit_visible_blocks", default=()
)


def active() -> bool:
    """Whether any block is open in the current context (one lookup)."""
    return bool(_blocks.get())


def wanted(cluster: str = DEFAULT_CLUSTER) -> bool:
    """Whether writes to ``cluster`` in the current context must be visible."""
    blocks = _blocks.get()
    return bool(blocks) and (None in blocks or cluster in blocks)


class VisibleOnReplicas(Block):
    """
    Make every write committed inside the block visible on the replicas.

    A context manager (``with visible_on_replicas():``) or a decorator
    (``@visible_on_replicas`` or ``@visible_on_replicas()``) on plain and
    ``async def`` functions; blocks nest, and work inside or around
    ``transaction.atomic()``: a transaction that wrote inside the block waits
    at its commit, wherever that commit is. The state lives in a context
    variable: a block in one thread or task is never seen by another.

    ``cluster`` names the one cluster whose writes must be visible
    (``RWSPLIT["CLUSTERS"]``, or ``"default"``); without it, every cluster.
    """

    def __init__(self, cluster: str | None = None) -> None:
        self.cluster = cluster

    def __enter__(self) -> None:
        _blocks.set((*_blocks.get(), self.cluster))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        blocks = list(_blocks.get())
        if self.cluster in blocks:
            del blocks[len(blocks) - 1 - blocks[::-1].index(self.cluster)]
        _blocks.set(tuple(blocks))


@overload
def visible_on_replicas(func: None = None) -> VisibleOnReplicas: ...
@overload
def visible_on_replicas(func: str) -> VisibleOnReplicas: ...
@overload
def visible_on_replicas(func: _F) -> _F: ...
def visible_on_replicas(func: _F | str | None = None) -> VisibleOnReplicas | _F:
    """
    Writes every reader sees: a context manager, or a decorator.

    ``visible_on_replicas()`` covers every cluster;
    ``visible_on_replicas("analytics")`` the cluster of that name only (an
    unknown name raises ``ValueError``).
    """
    if func is None:
        return VisibleOnReplicas()
    if isinstance(func, str):
        return VisibleOnReplicas(cluster_named("visible_on_replicas", func))
    return VisibleOnReplicas()(func)
