"""
The demo's pages and JSON endpoints.

Nothing here mentions databases: the router sends each query to the primary
or a replica, and the page footer (see context_processors.py) shows where
each one went and why.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from django.contrib import messages
from django.core.handlers.asgi import ASGIRequest
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from django_rwsplit import visible_on_replicas
from django_rwsplit.health import registry as health_registry
from django_rwsplit.pinning import current_scope
from django_rwsplit.signals import replica_ejected
from example_project.shop.forms import OrderForm
from example_project.shop.middleware import Query, current_queries
from example_project.shop.models import Note, Order, Product

# -- Pages --------------------------------------------------------------------


@require_GET
def product_list(request: HttpRequest) -> HttpResponse:
    products = list(Product.objects.all())
    recent = list(Order.objects.select_related("product")[:5])
    return render(
        request,
        "shop/product_list.html",
        {"products": products, "recent_orders": recent, "form": OrderForm()},
    )


@require_POST
def place_order(request: HttpRequest) -> HttpResponse:
    """Buy: take the stock and create an order, then redirect (Post/Redirect/Get)."""
    form = OrderForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Pick a product and a quantity from 1 to 10.")
        return redirect("shop:product_list")
    product_id = form.cleaned_data["product"]
    quantity = form.cleaned_data["quantity"]
    with transaction.atomic():
        taken = Product.objects.filter(pk=product_id, stock__gte=quantity).update(
            stock=F("stock") - quantity
        )
        if not taken:
            messages.error(request, "Sorry, not enough stock for that order.")
            return redirect("shop:product_list")
        order = Order.objects.create(product_id=product_id, quantity=quantity)
    messages.success(request, f"Order #{order.pk} placed.")
    return redirect("shop:order_detail", pk=order.pk)


@require_GET
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    # Right after the order was placed, this read must see it: the pin
    # cookie sends it to the primary (a lagging replica might 404).
    order = get_object_or_404(Order.objects.select_related("product"), pk=pk)
    return render(request, "shop/order_detail.html", {"order": order})


# -- JSON API (used by tests and the chaos suite) ------------------------------


def _routing(request: HttpRequest | None = None) -> dict[str, Any]:
    scope = current_scope()
    routing = {
        "pinned": scope.pinned if scope else None,
        "replica": scope.replica if scope else None,
        "wrote": scope.wrote if scope else False,
        "pid": os.getpid(),
    }
    if request is not None:
        routing["interface"] = "asgi" if isinstance(request, ASGIRequest) else "wsgi"
    return routing


def _last(write: bool) -> Query | None:
    return next((q for q in reversed(current_queries()) if q.write == write), None)


@require_GET
def api_whoami(request: HttpRequest) -> JsonResponse:
    """Run two reads; say where they went and whether this client is pinned."""
    Product.objects.exists()
    Order.objects.count()
    reads: dict[str, int] = {}
    servers: list[int] = []
    for query in current_queries():
        if not query.write:
            reads[query.alias] = reads.get(query.alias, 0) + 1
            if query.port is not None and query.port not in servers:
                servers.append(query.port)
    return JsonResponse({**_routing(), "reads": reads, "servers": servers})


@csrf_exempt
@require_POST
def api_write(request: HttpRequest) -> JsonResponse:
    """
    Create a Note; return its id and the server that wrote it.

    With ``?visible=1`` the write is made in ``visible_on_replicas()``: the
    response leaves once every replica in rotation has applied it.
    """
    text = request.POST.get("text", "")[:200]
    if request.GET.get("visible") == "1":
        with visible_on_replicas():
            note = Note.objects.create(text=text)
    else:
        note = Note.objects.create(text=text)
    query = _last(write=True)
    return JsonResponse(
        {
            **_routing(request),
            "id": note.pk,
            "alias": query.alias if query else None,
            "port": query.port if query else None,
        },
        status=201,
    )


@require_GET
def api_read(request: HttpRequest, pk: int) -> JsonResponse:
    """Whether Note ``pk`` is visible to this client, and who answered."""
    visible = Note.objects.filter(pk=pk).exists()
    query = _last(write=False)
    return JsonResponse(
        {
            **_routing(request),
            "id": pk,
            "visible": visible,
            "alias": query.alias if query else None,
            "port": query.port if query else None,
        }
    )


MAX_HOLD_MS = 1000

# Replicas this process has ejected so far (any thread): a request that sees
# the count move, or starts with a replica out, may read from the primary.
_ejections = 0


def _count_ejection(sender: object, **kwargs: Any) -> None:
    global _ejections
    _ejections += 1


replica_ejected.connect(_count_ejection, dispatch_uid="shop_count_ejections")


def _replica_out() -> bool:
    """Whether this process's health checks have any replica out of rotation now."""
    state = health_registry.current()
    return state is not None and any(
        not state.in_rotation(alias) for alias in state.config.replicas
    )


@csrf_exempt
@require_http_methods(["GET", "POST"])
@transaction.non_atomic_requests  # async views cannot run in ATOMIC_REQUESTS
async def api_pin(request: HttpRequest) -> JsonResponse:
    """
    Report this request's pin and the server its one read used (an async view).

    A POST is pinned by its method, a client with a pin cookie by the cookie,
    others not at all. ``?hold_ms=N`` (up to 1000) waits before the read, so
    that many requests overlap on the event loop (ASGI) or on threads (WSGI).
    """
    scope = current_scope()
    pinned_at_start = scope.pinned if scope else None
    ejections_at_start, out_at_start = _ejections, _replica_out()
    try:
        hold_ms = float(request.GET.get("hold_ms", 0))
    except ValueError:
        hold_ms = 0.0
    if 0 < hold_ms <= MAX_HOLD_MS:
        await asyncio.sleep(hold_ms / 1000)
    latest = await Note.objects.order_by("-pk").values_list("pk", flat=True).afirst()
    query = _last(write=False)
    return JsonResponse(
        {
            **_routing(request),
            "pinned_at_start": pinned_at_start,
            # A replica was out of rotation at some point of this request: an
            # unpinned read may then have fallen back to the primary.
            "replica_out": out_at_start or _ejections != ejections_at_start,
            "method": request.method,
            "latest_note": latest,
            "alias": query.alias if query else None,
            "port": query.port if query else None,
        }
    )


@require_GET
def api_health(request: HttpRequest) -> JsonResponse:
    """This process's view of the replicas (``null`` before its first read)."""
    snapshot = health_registry.snapshot()
    return JsonResponse(
        {
            "pid": os.getpid(),
            "health": snapshot.as_dict(show_endpoints=False) if snapshot else None,
        }
    )
