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
import struct
import time
from collections.abc import Callable
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse

from django_rwsplit import metrics_multiprocess


def metrics(request: HttpRequest) -> HttpResponse:
    try:
        import prometheus_client
        from prometheus_client import multiprocess
    except ImportError:
        raise Http404("prometheus-client is not installed") from None
    registry = prometheus_client.REGISTRY
    if metrics_multiprocess.enabled() and not request.GET.get("per_process"):
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    response = HttpResponse(
        _exposition(prometheus_client.generate_latest, registry),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )
    response["X-Worker-Pid"] = str(os.getpid())
    return response


def _exposition(generate: Callable[[Any], bytes], registry: Any) -> bytes:
    """
    ``generate(registry)``, read again if a worker was creating its file.

    prometheus_client's multiprocess reader fails (``struct.error``) on a file
    another process has created but not yet written its header to; that
    lasts moments, so the read is tried up to three times, 10 ms apart.
    """
    for _ in range(2):
        try:
            return generate(registry)
        except struct.error:
            time.sleep(0.01)
    return generate(registry)
