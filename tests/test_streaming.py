"""
A streamed response's body reads in its request's scope (issue 22).

The view writes a row and returns a streaming response whose body reads it
back. With replay paused on both replicas, a body read that left the
request's pin would go to a replica and miss the row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync
from django.http import FileResponse, StreamingHttpResponse
from django.test import AsyncClient, Client, override_settings

from django_rwsplit import pinning
from django_rwsplit.streaming import keep_scope_while_streaming
from tests.utils import fast_health

LAGGING_OK = fast_health(MAX_LAG_SECONDS=60.0, BALANCER="round_robin")


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True, databases="__all__")
@override_settings(RWSPLIT=LAGGING_OK)
def test_a_streamed_body_reads_the_rows_its_view_wrote(replay_paused):
    response = Client().get("/stream-after-write/", {"name": "streamed-sync"})
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    assert body == "start\ndefault True\n"
    assert pinning.current_scope() is None, "the scope leaked out of the body"


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True, databases="__all__")
@override_settings(RWSPLIT=LAGGING_OK)
def test_an_async_streamed_body_reads_the_rows_its_view_wrote(replay_paused):
    async def fetch() -> str:
        response = await AsyncClient().get(
            "/async-stream-after-write/", {"name": "streamed-async"}
        )
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.streaming_content]).decode()

    # async_to_sync: the view's sync parts run in this thread, whose
    # connections the test's teardown closes.
    assert async_to_sync(fetch)() == "start\ndefault True\n"


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True, databases="__all__")
@override_settings(RWSPLIT=LAGGING_OK)
def test_a_file_response_built_from_a_query_reads_the_rows_its_view_wrote(
    replay_paused,
):
    response = Client().get("/file-after-write/", {"name": "filed"})
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"default True\n"
    response.close()


# Pure logic: which responses are wrapped, and the scope around each chunk.


def test_each_chunk_is_made_in_the_scope_and_it_is_restored_after():
    scope = pinning.Scope(pinned="write")
    seen: list[object] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            seen.append(pinning.current_scope())
            yield b"x"

    response = StreamingHttpResponse(chunks())
    keep_scope_while_streaming(response, scope)
    assert pinning.current_scope() is None
    assert b"".join(response.streaming_content) == b"xxx"
    assert seen == [scope] * 3
    assert pinning.current_scope() is None


def test_an_async_body_is_made_in_the_scope():
    scope = pinning.Scope(pinned="write")

    async def chunks():
        for _ in range(2):
            yield str(pinning.current_scope() is scope).encode()

    async def run() -> bytes:
        response = StreamingHttpResponse(chunks())
        keep_scope_while_streaming(response, scope)
        assert response.is_async
        return b"".join([c async for c in response.streaming_content])

    assert asyncio.run(run()) == b"TrueTrue"


def test_a_file_from_disk_keeps_its_file_wrapper(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"data")
    response = FileResponse(path.open("rb"))
    keep_scope_while_streaming(response, pinning.Scope(pinned="write"))
    assert response.file_to_stream is not None  # sendfile still possible
    response.close()


def test_a_plain_response_is_left_alone():
    from django.http import HttpResponse

    response = HttpResponse(b"x")
    keep_scope_while_streaming(response, pinning.Scope())
    assert response.content == b"x"
