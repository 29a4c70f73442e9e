"""
Health endpoint and staff status page: ``include("django_rwsplit.urls")``.

Both are off for the public. ``health/`` and ``status/data/`` answer 404
unless the user is an active staff member (needs Django's authentication
middleware) or ``RWSPLIT["HEALTH_ENDPOINT_TOKEN"]`` is set and presented as
``Authorization: Bearer <token>`` or ``?token=<token>`` (a wrong one is
403). ``status/`` is the same page for people: anonymous users are sent to
the admin login. Host names and ports are shown only with
``RWSPLIT["HEALTH_ENDPOINT_SHOW_HOSTS"]``; credentials never are.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template import Context, Engine, TemplateDoesNotExist, loader
from django.urls import NoReverseMatch, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.http import urlencode
from django.views.decorators.http import require_safe

from django_rwsplit.conf import Config, config_or_none
from django_rwsplit.health import history
from django_rwsplit.health import registry as health_registry
from django_rwsplit.health.report import health_document, redact, show_hosts, summary
from django_rwsplit.health.tracker import HealthSnapshot

__all__ = ["health", "redact", "status", "status_data"]

HTTP_STATUS = {"ok": 200, "warning": 200, "critical": 503}
TEMPLATE = "django_rwsplit/status.html"


# -- access -------------------------------------------------------------------


def endpoint_token(config: Config | None) -> str | None:
    """Return ``RWSPLIT["HEALTH_ENDPOINT_TOKEN"]`` (None when unset or empty)."""
    token = getattr(config, "health_endpoint_token", None)
    return token if isinstance(token, str) and token else None


def is_staff(request: HttpRequest) -> bool:
    """Return whether the request comes from an active, logged-in staff user."""
    user = getattr(request, "user", None)
    return bool(
        user is not None
        and user.is_authenticated
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
    )


def presented_token(request: HttpRequest) -> str | None:
    """Return the bearer token of the request, from the header or ``?token=``."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.GET.get("token") or None


def token_matches(expected: str, presented: str) -> bool:
    """Compare tokens in constant time (any characters)."""
    return hmac.compare_digest(expected.encode(), presented.encode())


def _denied(request: HttpRequest, config: Config | None) -> int | None:
    """
    Return None to let the request in, else the status to refuse it with.

    Staff users are let in. With a token configured, a request presenting
    it is let in and any other gets 403; without one, the answer is 404.
    """
    if is_staff(request):
        return None
    token = endpoint_token(config)
    if token is None:
        return 404
    presented = presented_token(request)
    if presented is not None and token_matches(token, presented):
        return None
    return 403


def _refuse(status: int) -> HttpResponse:
    if status == 404:
        raise Http404
    return _forbidden()


def _forbidden() -> JsonResponse:
    response = JsonResponse({"error": "forbidden"}, status=403)
    add_never_cache_headers(response)
    return response


def _misconfigured() -> JsonResponse:
    response = JsonResponse(
        {
            "status": "critical",
            "error": "RWSPLIT is misconfigured; see manage.py check",
        },
        status=503,
    )
    add_never_cache_headers(response)
    return response


# -- data -----------------------------------------------------------------------


def current_snapshot(config: Config) -> HealthSnapshot:
    """Return this process's health snapshot of cluster ``config``."""
    snapshot = health_registry.process_health(config).snapshot()
    history.record(snapshot, config.name)
    return snapshot


def requested_clusters(request: HttpRequest, config: Config) -> list[Config] | None:
    """The clusters ``?cluster=NAME`` selects (every one without; None: unknown)."""
    try:
        return config.selected(request.GET.get("cluster"))
    except KeyError:
        return None


def several_document(
    config: Config, clusters: list[Config]
) -> tuple[dict[str, Any], str]:
    """
    The health document of ``clusters`` and the worst status among them.

    One cluster: its document (with a ``cluster`` name when the setting has
    several). Several: the default cluster's document at the top level, as
    with one cluster, its ``status`` the worst of all, and ``clusters``
    listing each cluster's own document.
    """
    documents = []
    for cluster in clusters:
        document = health_document(current_snapshot(cluster), cluster)
        if config.clusters:
            document = {"cluster": cluster.name, **document}
        documents.append(document)
    worst = max((d["status"] for d in documents), key=list(HTTP_STATUS).index)
    if len(documents) == 1:
        return documents[0], worst
    combined = {**documents[0], "status": worst, "clusters": documents}
    return combined, worst


def status_document(snapshot: HealthSnapshot, config: Config) -> dict[str, Any]:
    """Return what the status page shows: the snapshot, limits and history."""
    text = summary(snapshot)
    window = history.samples(cluster=config.name)
    return {
        "cluster": config.name,
        "health": health_document(snapshot, config),
        "summary": text if show_hosts(config) else redact(text, config),
        "max_lag_seconds": config.max_lag_seconds,
        "max_lag_bytes": config.max_lag_bytes,
        "check_interval": config.check_interval,
        "refresh_seconds": max(1.0, config.check_interval),
        "window_seconds": history.WINDOW_SECONDS,
        "now": time.time(),
        "history": [sample.as_dict() for sample in window],
        "reads": history.reads_summary(window),
    }


# -- views ------------------------------------------------------------------------


def _json(
    request: HttpRequest,
    document: Callable[[Config], tuple[dict[str, Any], int]],
) -> HttpResponse:
    """Answer a protected JSON view: access check, then ``document(config)``."""
    config = config_or_none()
    denied = _denied(request, config)
    if denied is not None:
        return _refuse(denied)
    if config is None:
        return _misconfigured()
    body, status = document(config)
    response = JsonResponse(body, status=status)
    add_never_cache_headers(response)
    return response


@require_safe
def health(request: HttpRequest) -> HttpResponse:
    """JSON health of the primary and replicas; 503 when critical."""

    def document(config: Config) -> tuple[dict[str, Any], int]:
        clusters = requested_clusters(request, config)
        if clusters is None:
            return {"error": "no such cluster"}, 404
        body, worst = several_document(config, clusters)
        return body, HTTP_STATUS[worst]

    return _json(request, document)


def page_document(request: HttpRequest, config: Config) -> dict[str, Any] | None:
    """The status page's document of ``?cluster=NAME`` (default); None: unknown."""
    clusters = requested_clusters(request, config)
    if clusters is None:
        return None
    cluster = clusters[0]  # the one asked for, else the default cluster
    document = status_document(current_snapshot(cluster), cluster)
    document["clusters"] = [c.name for c in config.every_cluster()]
    return document


@require_safe
def status_data(request: HttpRequest) -> HttpResponse:
    """The status page's data: snapshot and the last minutes of lag samples."""

    def document(config: Config) -> tuple[dict[str, Any], int]:
        found = page_document(request, config)
        if found is None:
            return {"error": "no such cluster"}, 404
        return found, 200

    return _json(request, document)


def _login_redirect(request: HttpRequest) -> HttpResponse | None:
    try:
        login = reverse("admin:login")
    except NoReverseMatch:
        return None
    return HttpResponseRedirect(
        f"{login}?{urlencode({'next': request.get_full_path()})}"
    )


_own_engine = Engine(dirs=[str(Path(__file__).parent / "templates")])


def _render(context: dict[str, Any], request: HttpRequest) -> str:
    try:
        return loader.render_to_string(TEMPLATE, context, request)
    except TemplateDoesNotExist:
        # A project without an app-directories template engine (an API).
        template = _own_engine.get_template(TEMPLATE)
        return template.render(Context({**context, "request": request}))


def _data_url(request: HttpRequest) -> str:
    match = request.resolver_match
    name = f"{match.namespace}:status-data" if match and match.namespace else None
    try:
        return reverse(name) if name else "data/"
    except NoReverseMatch:
        return "data/"


@require_safe
def status(request: HttpRequest) -> HttpResponse:
    """Staff page: replica states, a lag chart, refreshed every CHECK_INTERVAL."""
    config = config_or_none()
    if _denied(request, config) is not None:
        user = getattr(request, "user", None)
        anonymous = user is None or not user.is_authenticated
        if anonymous and presented_token(request) is None:
            redirect = _login_redirect(request)
            if redirect is not None:
                return redirect
        return _forbidden()
    if config is None:
        return _misconfigured()
    document = page_document(request, config)
    if document is None:
        raise Http404("no such cluster")
    data_url = _data_url(request)
    if request.GET.get("cluster"):
        data_url += f"?{urlencode({'cluster': document['cluster']})}"
    html = _render({"initial": document, "data_url": data_url}, request)
    response = HttpResponse(html)
    add_never_cache_headers(response)
    return response
