"""The demo app: products, orders and notes, with pages that show the routing."""

from __future__ import annotations
