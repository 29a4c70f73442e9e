"""Write detection of each statement: pure logic, no server."""

from __future__ import annotations

import pytest

from django_rwsplit.writes import is_write


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  select * from t",
        "-- a comment\nSELECT 1",
        "/* hint */ SELECT 1",
        "(SELECT 1) UNION (SELECT 2)",
        "SHOW server_version",
        "EXPLAIN SELECT 1",
        "SET TIME ZONE 'UTC'",
        "BEGIN",
        "COMMIT",
        "SAVEPOINT s1",
        "RELEASE SAVEPOINT s1",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "DECLARE c CURSOR FOR SELECT 1",
        "FETCH 10 FROM c",
        "EXPLAIN ANALYZE SELECT * FROM t",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT 1",
        "EXPLAIN UPDATE t SET a = 1",  # planned, not run
        "SELECT 'insert into t' AS words",  # in a string literal
        "SELECT 1; SELECT 2;",
    ],
)
def test_reads(sql):
    assert not is_write(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (1)",
        "update t set a = 1",
        "DELETE FROM t",
        "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
        "WITH moved AS (DELETE FROM t RETURNING *) SELECT * FROM moved",
        "CREATE TABLE t (a int)",
        "TRUNCATE t",
        "COPY t FROM STDIN",
        "LOCK TABLE t",
        "VACUUM t",
        "",
        "   ",
        "FROBNICATE",  # unknown: a write, to be safe
        "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
        "EXPLAIN (ANALYZE true) DELETE FROM t",
        "explain analyse update t set a = 1",
        "EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1",
        "SELECT * INTO new_table FROM t",
        "SELECT a INTO TEMP copy FROM t",
        "WITH x AS (SELECT 1) SELECT * INTO t2 FROM x",
        "SELECT 1; DELETE FROM t",
        "SET search_path TO app; UPDATE t SET a = 1",
    ],
)
def test_writes_and_unknowns(sql):
    assert is_write(sql)


def test_a_side_effect_in_select_is_not_seen():
    """The documented limit: such code must use pin_primary()."""
    assert not is_write("SELECT nextval('s')")
