"""Name the application code that issued a query, for log messages."""

from __future__ import annotations

import os
import sys

__all__ = ["query_origin"]

_SKIPPED = ("django", "psycopg", "asgiref", "django_rwsplit")


def _package_dir(name: str) -> str:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None) or ""
    return os.path.dirname(path) + os.sep if path else "\0"


def query_origin() -> str:
    """
    Return ``file:line in function`` of the innermost caller outside the stack.

    Frames of Django, psycopg, asgiref and this package are skipped, so the
    answer is the view, task or command line that made the query; ``unknown``
    when every frame is theirs.
    """
    skipped = tuple(map(_package_dir, _SKIPPED))
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(skipped) and not filename.startswith("<"):
            return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore [assignment]
    return "unknown"
