"""Views that report which server answered each query, for middleware tests."""

from __future__ import annotations

import json

from django.db import connection, connections, router, transaction
from django.http import HttpRequest, JsonResponse

from tests.testapp.models import Item


def _port_of_read() -> int:
    alias = router.db_for_read(Item)
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return int(cursor.fetchone()[0])


def read(request: HttpRequest) -> JsonResponse:
    ports = [_port_of_read() for _ in range(3)]
    return JsonResponse({"ports": ports, "items": Item.objects.count()})


def write_then_read(request: HttpRequest) -> JsonResponse:
    before = _port_of_read()
    Item.objects.create(name=request.GET.get("name", "x"))
    return JsonResponse(
        {"before": before, "after": [_port_of_read() for _ in range(2)]}
    )


def raw_write_then_read(request: HttpRequest) -> JsonResponse:
    before = _port_of_read()
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO testapp_item (name, version) VALUES ('raw', 0)")
    return JsonResponse(
        {"before": before, "after": [_port_of_read() for _ in range(2)]}
    )


def post_view(request: HttpRequest) -> JsonResponse:
    first = _port_of_read()
    name = json.loads(request.body or b"{}").get("name", "posted")
    Item.objects.create(name=name)
    return JsonResponse({"first": first, "after": _port_of_read()})


def fail(request: HttpRequest) -> JsonResponse:
    Item.objects.create(name="then-fail")
    raise RuntimeError("view failed after writing")


async def async_read(request: HttpRequest) -> JsonResponse:
    from asgiref.sync import sync_to_async

    ports = [await sync_to_async(_port_of_read)() for _ in range(2)]
    return JsonResponse({"ports": ports})


def atomic_read(request: HttpRequest) -> JsonResponse:
    """A read outside, then inside, the view's own ``atomic()`` block."""
    outside = _port_of_read()
    with transaction.atomic():
        inside = _port_of_read()
    return JsonResponse({"outside": outside, "inside": inside})


def slow_read(request: HttpRequest) -> JsonResponse:
    """A read that holds a lock on testapp_item for ``seconds``."""
    alias = router.db_for_read(Item)
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT inet_server_port(), pg_sleep(%s), count(*) FROM testapp_item",
            [float(request.GET.get("seconds", "1"))],
        )
        port, _, count = cursor.fetchone()
    return JsonResponse({"port": port, "count": count})


def create(request: HttpRequest) -> JsonResponse:
    item = Item.objects.create(name=request.GET.get("name", "created"))
    return JsonResponse({"id": item.pk})


def item(request: HttpRequest, pk: int) -> JsonResponse:
    alias = router.db_for_read(Item)
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT inet_server_port(), EXISTS(SELECT 1 FROM testapp_item WHERE id=%s)",
            [pk],
        )
        port, visible = cursor.fetchone()
    return JsonResponse({"port": port, "visible": visible})


def _authenticate(request: HttpRequest) -> None:
    """Token authentication inside the view, as REST frameworks do it."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Token "):
        from django.contrib.auth.models import User

        request.user = User.objects.get(username=header.removeprefix("Token "))


def api_create(request: HttpRequest) -> JsonResponse:
    _authenticate(request)
    return create(request)


def api_item(request: HttpRequest, pk: int) -> JsonResponse:
    _authenticate(request)
    return item(request, pk)


def slow_write(request: HttpRequest) -> JsonResponse:
    """An autocommit write that runs for ``seconds`` on the primary."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "INSERT INTO testapp_item (name) SELECT 'slow' FROM pg_sleep(%s)",
            [float(request.GET.get("seconds", "1"))],
        )
    return JsonResponse({"ok": True})
