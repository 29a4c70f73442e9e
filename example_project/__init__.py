"""An example Django project that shows django-rwsplit at work (`make demo`)."""

from __future__ import annotations
