"""Views writing to one cluster and reading both."""

from __future__ import annotations

import os

from analytics.models import Event
from django.db import router
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from shop.models import Order

from django_rwsplit.health import registry as health_registry


@csrf_exempt
def create_event(request: HttpRequest) -> JsonResponse:
    event = Event.objects.create(name=request.POST.get("name", "event"))
    return JsonResponse({"pk": event.pk})


def read_event(request: HttpRequest, pk: int) -> JsonResponse:
    """Read the event (analytics) and the orders (default) in one request."""
    event_db = router.db_for_read(Event)
    found = Event.objects.filter(pk=pk).exists()
    order_db = router.db_for_read(Order)
    Order.objects.count()
    return JsonResponse(
        {
            "found": found,
            "event_db": event_db,
            "order_db": order_db,
            "pid": os.getpid(),
            # This worker's replicas in rotation: why a read went where it did.
            "rotation": sorted(
                alias
                for state in health_registry.every_cluster()
                for alias in state.rotation.members
            ),
        }
    )
