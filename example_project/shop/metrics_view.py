"""
``/metrics``: the Prometheus exposition, as django-prometheus serves it.

With ``PROMETHEUS_MULTIPROC_DIR`` set (several gunicorn workers), every
worker's values, read from the multiprocess files; otherwise this process's
registry. ``?per_process=1`` shows this process's own registry either way
(the header ``X-Worker-Pid`` names it): what a scrape sees without
multiprocess mode.
"""

from __future__ import annotations

import os

from django.http import Http404, HttpRequest, HttpResponse


def metrics(request: HttpRequest) -> HttpResponse:
    try:
        import prometheus_client
        from prometheus_client import multiprocess
    except ImportError:
        raise Http404("prometheus-client is not installed") from None
    registry = prometheus_client.REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not request.GET.get(
        "per_process"
    ):
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    response = HttpResponse(
        prometheus_client.generate_latest(registry),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )
    response["X-Worker-Pid"] = str(os.getpid())
    return response
