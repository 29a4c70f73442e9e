"""Integrations with third-party Django apps."""

from __future__ import annotations
