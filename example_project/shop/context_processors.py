"""Give every template ``rw``: how django-rwsplit routed the current request."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest

from django_rwsplit.conf import Config, get_config
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.probes import format_lsn
from django_rwsplit.health.tracker import HealthSnapshot
from django_rwsplit.pinning import current_scope
from example_project.shop.middleware import Query, current_queries

WHY_PINNED = {
    None: "Not pinned: reads go to a healthy replica in rotation.",
    "write": "This request wrote, so its later reads went to the primary.",
    "unsafe_method": "A POST (an unsafe method) reads from the primary throughout.",
    "cookie": "You wrote a moment ago: your pin cookie sends your reads to the "
    "primary for STICKY_SECONDS, so you see your own writes.",
    "token": "Your pin cookie names a WAL position that no replica had replayed "
    "yet, so reads went to the primary.",
}

# Both modes, for the page: the one running is marked.
CONSISTENCY_MODES = {
    "lsn": "after a write, your pin cookie holds the WAL position of your last "
    "write; your reads go to any replica that has replayed it (else the primary).",
    "time": "after a write, your pin cookie sends all your reads to the primary "
    "for STICKY_SECONDS.",
}


@dataclass
class Routing:
    """What the page footer shows about the current request."""

    pinned: str | None
    why: str
    replica: str | None
    wrote: bool
    cookie: bool
    waits_for_lsn: str | None
    config: Config
    queries: list[Query]
    health: HealthSnapshot | None
    modes: list[tuple[str, str, bool]]


def routing(request: HttpRequest) -> Routing:
    config = get_config()
    scope = current_scope()
    pinned = scope.pinned if scope else None
    min_lsn = scope.min_lsn if scope else None
    return Routing(
        pinned=pinned,
        why=WHY_PINNED.get(pinned, f"Pinned: {pinned}."),
        replica=scope.replica if scope else None,
        wrote=scope.wrote if scope else False,
        cookie=config.cookie_name in request.COOKIES,
        waits_for_lsn=format_lsn(min_lsn) if min_lsn is not None else None,
        config=config,
        queries=current_queries(),  # a live list: later queries show up too
        health=health_registry.snapshot(),
        modes=[
            (mode, text, mode == config.consistency)
            for mode, text in CONSISTENCY_MODES.items()
        ],
    )


def rwsplit(request: HttpRequest) -> dict[str, Routing]:
    return {"rw": routing(request)}
