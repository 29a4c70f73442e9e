"""A project's own PostgreSQL backend, named without "postgresql"."""
