"""
Whether a SQL text may change data: one tokenising pass, then a verdict.

The scanner walks the text once and drops what is not SQL words: ``--`` and
(nested) ``/* */`` comments, ``'...'`` strings, ``E'...'`` strings with
backslash escapes, ``$tag$...$tag$`` dollar quotes and ``"..."`` identifiers
(kept as identifiers, never keywords). What remains is split into statements
at ``;``, and each statement is judged by its verb and a few clauses.

Anything the scanner cannot read to its end (an unterminated quote or
comment), an empty text and an unknown verb count as writes: in doubt, the
primary.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

__all__ = ["READ_ONLY_VERBS", "WRITE_FUNCTIONS", "is_write", "tokens"]

# Statements that never change data by themselves. Anything else writes.
READ_ONLY_VERBS = frozenset(
    {
        "select",
        "show",
        "explain",
        "values",
        "table",
        "set",
        "reset",
        "begin",
        "start",
        "commit",
        "end",
        "rollback",
        "savepoint",
        "release",
        "fetch",
        "move",
        "close",
        "declare",
        "discard",
        "deallocate",
        "listen",
        "unlisten",
    }
)
# Functions with an effect a standby refuses or would take in the wrong place:
# sequences, advisory locks (a standby grants them, excluding no one on the
# primary), notifications, transaction ids, large objects, WAL control.
WRITE_FUNCTIONS = frozenset(
    {
        "nextval",
        "setval",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
        "pg_advisory_unlock",
        "pg_advisory_unlock_shared",
        "pg_advisory_unlock_all",
        "pg_notify",
        "txid_current",
        "pg_current_xact_id",
        "lo_create",
        "lo_creat",
        "lo_import",
        "lo_unlink",
        "lo_from_bytea",
        "lo_put",
        "lowrite",
        "lo_truncate",
        "lo_truncate64",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_logical_emit_message",
        "pg_create_logical_replication_slot",
        "pg_create_physical_replication_slot",
        "pg_drop_replication_slot",
        "dblink_exec",
    }
)
_DATA_CHANGING = frozenset({"insert", "update", "delete", "merge"})
# After FOR in a SELECT: a row-locking clause (FOR UPDATE, FOR NO KEY UPDATE,
# FOR SHARE, FOR KEY SHARE). A standby refuses them; on the primary they
# must keep the request there.
_LOCK_STRENGTHS = frozenset({"update", "no", "share", "key"})

# Where the next thing of interest starts: a word, a quote, a dollar quote or
# a positional parameter, a comment, or punctuation that matters.
_NEXT = re.compile(
    r"(?P<word>[^\W\d][\w$]*)"
    r"|(?P<dollar>\$(?:[^\W\d]\w*)?\$)"
    r"|(?P<param>\$\d+)"
    r"|(?P<punct>--|/\*|[';()\"])"
)
_ESCAPE_STRING_BODY = re.compile(r"(?:[^'\\]|\\.|'')*'", re.DOTALL)
_COMMENT_EDGE = re.compile(r"/\*|\*/")

Token = str
# Marks what the scanner could not read to its end.
UNREADABLE = "\x00"


def tokens(sql: str) -> list[Token]:
    """
    Return the words (lower case) and ``( ) ;`` of ``sql``, in order.

    A quoted identifier becomes ``"name`` (never a keyword). The list ends
    with :data:`UNREADABLE` when a quote or comment does not end.
    """
    found: list[Token] = []
    at = 0
    length = len(sql)
    while at < length:
        match = _NEXT.search(sql, at)
        if match is None:
            break
        kind = match.lastgroup
        text = match.group()
        at = match.end()
        if kind == "word":
            if text in ("e", "E") and sql.startswith("'", at):
                body = _ESCAPE_STRING_BODY.match(sql, at + 1)
                if body is None:
                    return [*found, UNREADABLE]
                at = body.end()
                continue
            found.append(text.lower())
        elif kind == "dollar":
            end = sql.find(text, at)
            if end < 0:
                return [*found, UNREADABLE]
            at = end + len(text)
        elif kind == "param":
            continue
        elif text == "--":
            newline = sql.find("\n", at)
            at = length if newline < 0 else newline + 1
        elif text == "/*":
            at = _skip_comment(sql, at)
            if at < 0:
                return [*found, UNREADABLE]
        elif text in ("'", '"'):
            end = _closing_quote(sql, at, text)
            if end < 0:
                return [*found, UNREADABLE]
            if text == '"':
                found.append('"' + sql[at : end - 1].replace('""', '"'))
            at = end
        else:
            found.append(text)
    return found


def _closing_quote(sql: str, at: int, quote: str) -> int:
    """Return the index after the quote closing at or after ``at`` (-1: none)."""
    position = at
    while True:
        end = sql.find(quote, position)
        if end < 0:
            return -1
        if sql.startswith(quote, end + 1):  # doubled: part of the text
            position = end + 2
            continue
        return end + 1


def _skip_comment(sql: str, at: int) -> int:
    """Return the index after a (nested) block comment opened before ``at``."""
    depth = 1
    while depth:
        edge = _COMMENT_EDGE.search(sql, at)
        if edge is None:
            return -1
        depth += 1 if edge.group() == "/*" else -1
        at = edge.end()
    return at


@functools.lru_cache(maxsize=4096)
def is_write(sql: str) -> bool:
    """
    Return whether ``sql`` may change data (conservatively: unknown is a write).

    Each statement counts (``SELECT 1; DELETE ...`` writes), and so do
    ``SELECT ... INTO``, row locks (``FOR UPDATE``/``FOR SHARE``), a ``WITH``
    holding a data-changing statement, calls of :data:`WRITE_FUNCTIONS`
    (``nextval``, advisory locks, ``pg_notify`` ...) and ``EXPLAIN ANALYZE``
    (which runs its statement) of a write or of ``EXECUTE``.
    """
    words = tokens(sql)
    if UNREADABLE in words:
        return True
    statements: list[list[Token]] = [[]]
    for word in words:
        if word == ";":
            statements.append([])
        else:
            statements[-1].append(word)
    statements = [s for s in statements if s]
    if not statements:
        return True
    return any(_statement_writes(statement) for statement in statements)


def _statement_writes(words: Sequence[Token]) -> bool:
    start = next((i for i, w in enumerate(words) if w != "("), len(words))
    if start == len(words):
        return True
    verb = words[start]
    rest = words[start + 1 :]
    if _calls_write_function(words):
        return True
    if verb == "with":
        return bool(_DATA_CHANGING.intersection(rest)) or _selects_into_or_locks(rest)
    if verb in ("select", "table", "values"):
        return _selects_into_or_locks(rest)
    if verb == "declare":
        return _locks_rows(rest)
    if verb == "explain":
        return _explain_writes(rest)
    if verb == "copy":
        return not _copies_out(rest)
    return verb not in READ_ONLY_VERBS


def _calls_write_function(words: Sequence[Token]) -> bool:
    for index, word in enumerate(words[:-1]):
        name = word[1:] if word.startswith('"') else word
        if name in WRITE_FUNCTIONS and words[index + 1] == "(":
            return True
    return False


def _selects_into_or_locks(words: Sequence[Token]) -> bool:
    return "into" in words or _locks_rows(words)


def _locks_rows(words: Sequence[Token]) -> bool:
    return any(
        word == "for" and following in _LOCK_STRENGTHS
        for word, following in zip(words, words[1:], strict=False)
    )


def _explain_writes(words: Sequence[Token]) -> bool:
    """EXPLAIN runs its statement only with ANALYZE; options come first."""
    analyze = False
    index = 0
    if words[:1] == ["("]:
        close = words.index(")") if ")" in words else len(words)
        options = words[1:close]
        analyze = any(
            word in ("analyze", "analyse")
            and (i + 1 >= len(options) or options[i + 1] not in ("false", "off", "0"))
            for i, word in enumerate(options)
        )
        index = close + 1
    while index < len(words) and words[index] in ("analyze", "analyse", "verbose"):
        analyze = analyze or words[index] != "verbose"
        index += 1
    statement = words[index:]
    if not analyze or not statement:
        return False
    return _statement_writes(statement)


def _copies_out(words: Sequence[Token]) -> bool:
    """Whether a COPY's direction (outside its parenthesised query) is TO."""
    depth = 0
    for word in words:
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        elif depth == 0 and word in ("to", "from"):
            return word == "to"
    return False
