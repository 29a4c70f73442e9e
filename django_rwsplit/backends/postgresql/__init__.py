"""A PostgreSQL backend whose replica connections fail over when they cannot connect."""
