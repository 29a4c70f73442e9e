"""
Whether this process serves requests or tasks, so its health starts with it.

A server or worker process starts its health rounds in ``AppConfig.ready()``,
off the request path, and its forked children start their own at once: the
programs in :data:`SERVERS` (gunicorn, uvicorn, daphne, hypercorn, granian,
uWSGI, mod_wsgi, Celery) and the management commands in
:data:`SERVING_COMMANDS` (``runserver``'s serving child, task workers). Any
other process (``migrate``, ``collectstatic`` in a build without a database,
``test``, a type checker loading Django, a script) starts them only if it
routes a read to a replica, at that read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import PurePath

__all__ = ["SERVERS", "SERVING_COMMANDS", "serves"]

SERVERS = frozenset(
    {
        "gunicorn",
        "uvicorn",
        "daphne",
        "hypercorn",
        "granian",
        "uwsgi",
        "mod_wsgi",
        "celery",
    }
)
SERVING_COMMANDS = frozenset({"runserver", "db_worker", "runworker", "rqworker"})
_DJANGO_PROGRAMS = frozenset({"manage.py", "django-admin", "django-admin.py"})


def serves(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Return True when this process is a server or worker (see the module)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if not argv:
        return False
    path = PurePath(argv[0])
    if path.name in SERVERS or (
        path.name == "__main__.py" and path.parent.name in SERVERS
    ):
        return True
    runs_django = path.name in _DJANGO_PROGRAMS or (
        path.name == "__main__.py" and path.parent.name == "django"
    )
    command = argv[1] if runs_django and len(argv) > 1 else ""
    if command not in SERVING_COMMANDS:
        return False
    # runserver's autoreloader: the parent only watches files; its child
    # (RUN_MAIN) serves.
    return command != "runserver" or "--noreload" in argv or "RUN_MAIN" in environ
