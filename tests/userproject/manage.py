#!/usr/bin/env python
"""A user's project with django-rwsplit installed, used to run its own tests."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "userproject_settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
