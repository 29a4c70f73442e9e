"""Views that write through ORM read paths, and that stream after writing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from django.db import connections, router
from django.db.models import F, Func, IntegerField
from django.http import (
    FileResponse,
    HttpRequest,
    JsonResponse,
    StreamingHttpResponse,
)

from tests.testapp.models import Item


def _port(alias: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return int(cursor.fetchone()[0])


def _ids(rows: object) -> list[int]:
    return [item.pk for item in rows]  # type: ignore[attr-defined]


def _raw_insert(name: str) -> list[int]:
    sql = (
        "INSERT INTO testapp_item (name, version) VALUES (%s, 0) "
        "RETURNING id, name, version"
    )
    return _ids(Item.objects.raw(sql, [name]))


def _raw_delete(name: str) -> list[int]:
    sql = "DELETE FROM testapp_item WHERE name = %s RETURNING id, name, version"
    return _ids(Item.objects.raw(sql, [name]))


def _raw_for_update(name: str) -> list[int]:
    sql = "SELECT id, name, version FROM testapp_item WHERE name = %s FOR UPDATE"
    return _ids(Item.objects.raw(sql, [name]))


def _nextval(name: str) -> list[int]:
    sequence = Func(
        F("version"),  # any expression: the function name is what matters
        function="nextval",
        template="nextval('testapp_item_id_seq')",
        output_field=IntegerField(),
    )
    return [row.n for row in Item.objects.filter(name=name).annotate(n=sequence)]


def _setval(name: str) -> list[int]:
    rows = Item.objects.filter(name=name).extra(
        select={"n": "setval('testapp_item_id_seq', nextval('testapp_item_id_seq'))"}
    )
    return [row.n for row in rows]  # type: ignore[attr-defined]


def _advisory_lock(name: str) -> list[int]:
    rows = Item.objects.filter(name=name).extra(select={"n": "pg_advisory_lock(4242)"})
    return [row.pk for row in rows]


def _notify(name: str) -> list[int]:
    rows = Item.objects.filter(name=name).extra(
        select={"n": "pg_notify('rwsplit_test', 'hello')"}
    )
    return [row.pk for row in rows]


def _unseen_write(name: str) -> list[int]:
    """A write the classifier cannot see: a function that inserts."""
    sql = "SELECT rwsplit_test_insert(%s) AS id, %s AS name, 0 AS version"
    return _ids(Item.objects.raw(sql, [name, name]))


CASES = {
    "raw_insert": _raw_insert,
    "raw_delete": _raw_delete,
    "raw_for_update": _raw_for_update,
    "nextval": _nextval,
    "setval": _setval,
    "advisory_lock": _advisory_lock,
    "notify": _notify,
    "unseen_write": _unseen_write,
}


def hidden_write(request: HttpRequest, case: str) -> JsonResponse:
    """Run one hidden write; report where it was routed and where reads go next."""
    routed = router.db_for_read(Item)
    result = CASES[case](request.GET.get("name", "hidden"))
    after = router.db_for_read(Item)
    return JsonResponse(
        {"routed": routed, "result": result, "after": after, "port": _port(after)}
    )


def _body(name: str) -> Iterator[str]:
    yield "start\n"
    alias = router.db_for_read(Item)
    found = Item.objects.filter(name=name).exists()
    yield f"{alias} {found}\n"


def stream_after_write(request: HttpRequest) -> StreamingHttpResponse:
    """Write, then read the row back while the body streams."""
    name = request.GET.get("name", "streamed")
    Item.objects.create(name=name)
    return StreamingHttpResponse(_body(name), content_type="text/plain")


async def _async_body(name: str) -> AsyncIterator[str]:
    from asgiref.sync import sync_to_async

    yield "start\n"
    for line in await sync_to_async(list)(_body(name)):
        if line != "start\n":
            yield line


async def async_stream_after_write(request: HttpRequest) -> StreamingHttpResponse:
    from asgiref.sync import sync_to_async

    name = request.GET.get("name", "streamed")
    await sync_to_async(Item.objects.create)(name=name)
    return StreamingHttpResponse(_async_body(name), content_type="text/plain")


SNEAKY = {
    "quote_in_comment": "WITH x AS (SELECT 1 /* the primary's */) "
    "INSERT INTO testapp_item (name, version) VALUES ('{name}', 0) RETURNING id",
    "quote_in_line_comment": "SELECT pg_sleep(0) /* don't */; "
    "INSERT INTO testapp_item (name, version) VALUES ('{name}', 0)",
    "dollar_quote": "SELECT $$'$$; INSERT INTO testapp_item (name, version) "
    "VALUES ('{name}', 0)",
    "escape_string": "SELECT E'\\''; INSERT INTO testapp_item (name, version) "
    "VALUES ('{name}', 0)",
    "nested_comment": "SELECT /* a /* nested ' */ comment */ 1; "
    "INSERT INTO testapp_item (name, version) VALUES ('{name}', 0)",
}


def sneaky_write(request: HttpRequest, case: str) -> JsonResponse:
    """A raw write on the primary's connection, then a routed read of the row."""
    name = request.GET["name"]
    with connections["default"].cursor() as cursor:
        if case == "copy":
            with cursor.copy("COPY testapp_item (name, version) FROM STDIN") as copy:
                copy.write_row((name, 0))
        elif case == "lock":
            cursor.execute(
                "SELECT id FROM testapp_item WHERE name = %s FOR UPDATE", [name]
            )
        else:
            # Literal values, as a user writes them: quotes the old
            # classifier paired across comments.
            cursor.execute(SNEAKY[case].format(name=name.replace("'", "''")))
    alias = router.db_for_read(Item)
    return JsonResponse(
        {"alias": alias, "found": Item.objects.filter(name=name).count()}
    )


class RowsAsFile:
    """A file-like object whose bytes come from a query, read as it streams."""

    def __init__(self, name: str) -> None:
        self.name_filter = name
        self.done = False

    def read(self, size: int = -1) -> bytes:
        if self.done:
            return b""
        self.done = True
        alias = router.db_for_read(Item)
        found = Item.objects.filter(name=self.name_filter).exists()
        return f"{alias} {found}\n".encode()

    def close(self) -> None:
        self.done = True


def file_after_write(request: HttpRequest) -> FileResponse:
    """Write, then answer a FileResponse whose file reads the row back."""
    name = request.GET.get("name", "filed")
    Item.objects.create(name=name)
    return FileResponse(RowsAsFile(name), content_type="text/plain")
