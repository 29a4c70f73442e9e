"""
What ``pin_primary`` and ``visible_on_replicas`` share: a block that decorates.

A :class:`Block` is a context manager; called on a function (plain or
``async def``) it runs the function inside itself. :func:`cluster_named`
checks the cluster name the two helpers accept.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from django_rwsplit import conf
from django_rwsplit.conf import DEFAULT_CLUSTER

__all__ = ["Block", "cluster_named"]

_F = TypeVar("_F", bound=Callable[..., Any])


class Block:
    """A context manager that decorates plain and ``async def`` functions."""

    def __enter__(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        raise NotImplementedError

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


def cluster_named(helper: str, name: str) -> str | None:
    """
    The cluster ``helper("name")`` means: ``name``, or None (every cluster)
    when the setting has one cluster only. An unknown name raises ValueError.
    """
    clusters = conf.get_config().clusters
    if name != DEFAULT_CLUSTER and name not in clusters:
        raise ValueError(
            f"{helper}({name!r}): no cluster of that name; clusters are "
            '"default" and the names in RWSPLIT["CLUSTERS"].'
        )
    return name if clusters else None
