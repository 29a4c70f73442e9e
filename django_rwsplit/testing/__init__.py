"""Test helpers: a local PostgreSQL primary + streaming replicas (see ``cluster``)."""
