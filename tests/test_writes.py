"""Write detection of each statement: pure logic, no server."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_rwsplit.sql_classify import tokens
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
        "SELECT substring('abc' FROM 1 FOR 2)",  # FOR, but no row lock
        'SELECT "delete", "update" FROM t',  # quoted identifiers, not verbs
        "SELECT $body$ ; DELETE FROM t $body$",  # inside a dollar quote
        "SELECT E'\\'; DELETE FROM t'",  # inside an E'' string
        "SELECT /* ; DELETE /* nested */ FROM t */ 1",
        "SELECT %s, $1::int",
        "EXPLAIN EXECUTE p",  # planned, not run
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        'SELECT "app_item"."id" FROM "app_item" WHERE "app_item"."name" = %s',
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
        # Issue 22: quotes in comments, dollar quotes, E'' strings.
        "WITH x AS (SELECT 1 /* the primary's */) "
        "INSERT INTO app_item (name) VALUES ('x') RETURNING id",
        "SELECT pg_sleep(0) /* don't */; DELETE FROM t",
        "SELECT $$'$$; DELETE FROM t",
        "SELECT E'it\\'s'; DELETE FROM t",
        "SELECT /* a /* nested ' */ still */ 1; DELETE FROM t",
        "SELECT 1 -- it's\n; DELETE FROM t",
        # Row locks: a standby refuses them; on the primary they pin.
        "SELECT * FROM t FOR UPDATE",
        "select * from t for share",
        "SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED",
        "SELECT * FROM t FOR KEY SHARE NOWAIT",
        "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE",
        # EXPLAIN ANALYZE runs what it explains; a prepared statement is unknown.
        "EXPLAIN ANALYZE EXECUTE p(1)",
        # Functions with effects (sequences, advisory locks, NOTIFY ...).
        "SELECT nextval('s')",
        "SELECT pg_catalog.setval('s', 10)",
        "SELECT \"nextval\"('s')",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_xact_lock(1, 2)",
        "SELECT pg_notify('c', 'x')",
        "SELECT id, nextval('s') AS n FROM t",
        "EXPLAIN ANALYZE SELECT nextval('s')",
        # Unreadable to the end: in doubt, a write.
        "SELECT 'unterminated",
        "SELECT 1 /* unterminated",
        "SELECT $q$ unterminated",
        'SELECT "unterminated',
    ],
)
def test_writes_and_unknowns(sql):
    assert is_write(sql)


# Known writes, and the noise a user's SQL may hold around and inside them.
WRITES = [
    "INSERT INTO t (a) VALUES ({noise})",
    "UPDATE t SET a = {noise}",
    "DELETE FROM t WHERE a = {noise}",
    "WITH x AS (SELECT {noise}) INSERT INTO t SELECT * FROM x",
    "SELECT {noise} FROM t FOR UPDATE",
    "SELECT nextval({noise})",
    "SELECT pg_advisory_lock({noise})",
    "SELECT {noise}; DELETE FROM t",
]
_TEXT = st.text(alphabet="ab;'\"$*/-\\\n x", max_size=12)
_QUOTED_TEXT = _TEXT.filter(lambda t: "*/" not in t and "/*" not in t)
NOISE = st.one_of(
    st.just("1"),
    _TEXT.map(lambda t: "'" + t.replace("'", "''") + "'"),
    _TEXT.map(lambda t: "E'" + t.replace("\\", "\\\\").replace("'", "\\'") + "'"),
    _TEXT.filter(lambda t: "$q$" not in t).map(lambda t: f"$q${t}$q$"),
    _TEXT.filter(lambda t: "$$" not in t and not t.endswith("$")).map(
        lambda t: f"$${t}$$"
    ),
    _QUOTED_TEXT.map(lambda t: f"/* {t} */ 1"),
    _QUOTED_TEXT.map(lambda t: f"/* /* {t} */ {t} */ 1"),
    _TEXT.filter(lambda t: "\n" not in t).map(lambda t: f"-- {t}\n1"),
    _TEXT.map(lambda t: '"' + t.replace('"', '""') + '"'),
)
SPACE = st.sampled_from([" ", "  ", "\n", "\t", " /* ' */ ", " -- ;'\n"])


@settings(max_examples=300, deadline=None)
@given(
    template=st.sampled_from(WRITES),
    noise=st.lists(NOISE, min_size=1, max_size=3),
    before=SPACE,
    after=SPACE,
)
def test_a_write_in_any_noise_is_a_write(template, noise, before, after):
    sql = before + template.format(noise=" || ".join(noise)) + after
    assert is_write(sql), (sql, tokens(sql))


@settings(max_examples=300, deadline=None)
@given(noise=st.lists(NOISE, min_size=1, max_size=3), space=SPACE)
def test_noise_alone_in_a_select_is_a_read(noise, space):
    """The other side: strings and comments holding anything stay reads."""
    sql = f"SELECT{space}" + " || ".join(noise) + space + "FROM t"
    assert not is_write(sql), (sql, tokens(sql))
