"""
Chaos tests: the example project under real servers, faults injected under load.

``servers`` runs the example project under gunicorn (WSGI) and uvicorn (ASGI)
against a :class:`~django_rwsplit.testing.cluster.LocalCluster`; ``loadgen``
is the load generator (its own process); ``scenario`` injects the faults,
times them and judges the per-request records. ``tests/test_chaos.py`` runs a
CI-sized scenario, ``benchmarks/chaos.py`` a longer one.
"""

from __future__ import annotations
