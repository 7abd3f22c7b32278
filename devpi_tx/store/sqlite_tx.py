# -*- test-case-name: tests.store.test_store -*-
"""
One SQLite transaction of the store: reads at its serial, and the changes
and file placements a write buffers until it commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Coroutine
from typing import Any

from zope.interface import implementer

from devpi_tx.store.interfaces import ITransaction


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _prefix_end(prefix: str) -> str:
    if not prefix:
        return "\U0010ffff"
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def drive(value: Any) -> Any:
    """
    The result of a transaction function: C{value}, or what the coroutine
    C{value} returns.  Here every C{await} of a transaction's read completes
    at once (the read is done by the time it is awaited), so the coroutine
    runs to its end within one step, in this thread, with no reactor turn.

    @raise RuntimeError: the coroutine waited on something else.
    """
    if not isinstance(value, Coroutine):
        return value
    try:
        value.send(None)
    except StopIteration as stop:
        return stop.value
    value.close()
    raise RuntimeError("a transaction function waited on something other than its transaction")


@implementer(ITransaction)
class SQLiteTransaction:
    """
    Reads are coroutines, as on every engine (a network database answers
    later); here they are answered at once, see L{drive}.
    """

    def __init__(self, conn: sqlite3.Connection, serial: int, writable: bool) -> None:
        self._conn = conn
        self.serial = serial
        self._writable = writable
        self.changes: dict[str, Any] = {}
        self.placed: list[tuple[str, str]] = []
        self.removed: list[str] = []

    async def get(self, key: str) -> Any:
        if key in self.changes:
            return self.changes[key]
        return self._stored(key)

    def _stored(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _change(self, key: str, value: Any) -> None:
        # a write that leaves a key as it was is no change (no serial for it)
        if key not in self.changes and self._stored(key) == value:
            return
        self.changes[key] = value

    async def items(self, prefix: str) -> list[tuple[str, Any]]:
        rows = self._conn.execute(
            "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, _prefix_end(prefix)),
        ).fetchall()
        found = {key: json.loads(value) for key, value in rows}
        for key, value in self.changes.items():
            if key.startswith(prefix):
                found[key] = value
        return sorted((k, v) for k, v in found.items() if v is not None)

    def set(self, key: str, value: Any) -> None:
        assert self._writable, "read transaction"
        self._change(key, json.loads(dumps(value)))

    def delete(self, key: str) -> None:
        assert self._writable, "read transaction"
        self._change(key, None)

    def place_file(self, temp_path: str, relpath: str) -> None:
        assert self._writable, "read transaction"
        self.placed.append((temp_path, relpath))

    def remove_file(self, relpath: str) -> None:
        assert self._writable, "read transaction"
        self.removed.append(relpath)
