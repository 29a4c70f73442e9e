"""WSGI entry point of the two-cluster project (the tests serve it with gunicorn)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clusterproject_settings")
application = get_wsgi_application()
