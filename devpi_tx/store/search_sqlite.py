# -*- test-case-name: tests.events.test_hooks -*-
"""
The search index of the SQLite engine: C{<serverdir>/search.sqlite}, an
FTS5 table over the name, summary, description and keywords of every
private version, ranked with bm25.
"""

from __future__ import annotations

import os
import sqlite3

from zope.interface import implementer

from devpi_tx.store.interfaces import ISearchIndex, SearchEntry

SEARCH_DB = "search.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    project TEXT NOT NULL,
    version TEXT NOT NULL,
    summary TEXT NOT NULL,
    UNIQUE (stage, project, version)
);
CREATE VIRTUAL TABLE IF NOT EXISTS entries_text USING fts5(
    name, summary, description, keywords,
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3'
);
"""
# bm25 weights of name, summary, description, keywords
_RANK = "bm25(entries_text, 10.0, 4.0, 1.0, 3.0)"


def open_search(serverdir: str) -> sqlite3.Connection:
    """
    The search database, created if missing.  WAL and a busy timeout let
    the event processor write while other processes read.
    """
    conn = sqlite3.connect(
        os.path.join(serverdir, SEARCH_DB), timeout=30, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if conn.execute("PRAGMA user_version").fetchone()[0] < 1:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("PRAGMA user_version=1")
            conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def match_expression(query: str) -> str:
    """
    An FTS5 query for the words of C{query}: each word a quoted phrase
    matched as a prefix, all required.  Words without a letter or digit
    are left out; C{""} when nothing is left.
    """
    words = [word for word in query.split() if any(c.isalnum() for c in word)]
    return " ".join('"' + word.replace('"', '""') + '"*' for word in words)


def search(serverdir: str, query: str, limit: int = 50) -> list[dict[str, str]]:
    """Private versions matching C{query}, best first."""
    expression = match_expression(query)
    if not expression or limit <= 0:
        return []
    conn = open_search(serverdir)
    try:
        rows = conn.execute(
            "SELECT e.stage, e.project, e.version, e.summary FROM entries_text "
            "JOIN entries AS e ON e.id = entries_text.rowid "
            f"WHERE entries_text MATCH ? ORDER BY {_RANK}, e.stage, e.project, e.id DESC LIMIT ?",
            (expression, limit),
        ).fetchall()
    finally:
        conn.close()
    return [{"stage": s, "project": p, "version": v, "summary": summary} for s, p, v, summary in rows]


@implementer(ISearchIndex)
class SQLiteSearchIndex:
    """L{ISearchIndex} in C{<serverdir>/search.sqlite}; one connection kept for writes."""

    def __init__(self, serverdir: str) -> None:
        self._serverdir = serverdir
        self._conn: sqlite3.Connection | None = None

    def search(self, query: str, limit: int = 50) -> list[dict[str, str]]:
        return search(self._serverdir, query, limit)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def apply(self, entries: list[SearchEntry], removed: list[tuple[str, str, str]], dropped_stages: list[str]) -> None:
        # one connection for all serials: opening and closing a WAL database
        # per serial cost a checkpoint and its fsyncs every time
        if self._conn is None:
            self._conn = open_search(self._serverdir)
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stage, project, version in removed:
                    self._remove(conn, stage, project, version)
                for entry in entries:
                    self._put(conn, entry)
                for stage in dropped_stages:
                    conn.execute(
                        "DELETE FROM entries_text WHERE rowid IN (SELECT id FROM entries WHERE stage = ?)", (stage,)
                    )
                    conn.execute("DELETE FROM entries WHERE stage = ?", (stage,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error:
            self.close()  # the next call starts on a fresh connection
            raise

    @staticmethod
    def _remove(conn: sqlite3.Connection, stage: str, project: str, version: str) -> None:
        row = conn.execute(
            "SELECT id FROM entries WHERE stage = ? AND project = ? AND version = ?", (stage, project, version)
        ).fetchone()
        if row is not None:
            conn.execute("DELETE FROM entries_text WHERE rowid = ?", (row[0],))
            conn.execute("DELETE FROM entries WHERE id = ?", (row[0],))

    @staticmethod
    def _put(conn: sqlite3.Connection, entry: SearchEntry) -> None:
        where = (entry.stage, entry.project, entry.version)
        row = conn.execute("SELECT id FROM entries WHERE stage = ? AND project = ? AND version = ?", where).fetchone()
        if row is None:
            rowid = conn.execute(
                "INSERT INTO entries (stage, project, version, summary) VALUES (?, ?, ?, ?)", (*where, entry.summary)
            ).lastrowid
        else:
            rowid = row[0]
            conn.execute("DELETE FROM entries_text WHERE rowid = ?", (rowid,))
            conn.execute("UPDATE entries SET summary = ? WHERE id = ?", (entry.summary, rowid))
        conn.execute(
            "INSERT INTO entries_text (rowid, name, summary, description, keywords) VALUES (?, ?, ?, ?, ?)",
            (rowid, entry.name, entry.summary, entry.description, entry.keywords),
        )
