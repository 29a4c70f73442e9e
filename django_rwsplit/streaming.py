"""
A streamed response's body reads in its request's routing scope.

The middleware's scope ends when the view returns, but a
``StreamingHttpResponse`` (or a ``FileResponse`` over a file-like object that
queries) produces its body later, as the server sends it. Each chunk is
made inside the request's scope again, so the body's reads see the
request's pin, token and chosen replica, as the view's reads did.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from django.http import HttpResponseBase

from django_rwsplit import pinning

__all__ = ["keep_scope_while_streaming"]

_END: Any = object()


def keep_scope_while_streaming(
    response: HttpResponseBase, scope: pinning.Scope
) -> None:
    """Make ``response``'s body, if streamed, in ``scope`` (sync or async)."""
    if not getattr(response, "streaming", False) or _streams_an_os_file(response):
        return
    content: Any = response.streaming_content  # type: ignore[attr-defined]
    if getattr(response, "is_async", False):
        response.streaming_content = _async_in_scope(content, scope)  # type: ignore[attr-defined]
    else:
        response.streaming_content = _in_scope(content, scope)  # type: ignore[attr-defined]


def _streams_an_os_file(response: HttpResponseBase) -> bool:
    """A real file's bytes come from the OS (and may go out by sendfile)."""
    filelike = getattr(response, "file_to_stream", None)
    try:
        return filelike is not None and filelike.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _in_scope(chunks: Iterable[bytes], scope: pinning.Scope) -> Iterator[bytes]:
    iterator = iter(chunks)
    while True:
        token = pinning.activate(scope)
        try:
            chunk = next(iterator, _END)
        finally:
            pinning.deactivate(token)
        if chunk is _END:
            return
        yield chunk


async def _async_in_scope(
    chunks: AsyncIterable[bytes], scope: pinning.Scope
) -> AsyncIterator[bytes]:
    iterator = aiter(chunks)
    while True:
        token = pinning.activate(scope)
        try:
            chunk = await anext(iterator, _END)
        finally:
            pinning.deactivate(token)
        if chunk is _END:
            return
        yield chunk
