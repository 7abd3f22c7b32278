# -*- test-case-name: tests.store.test_store -*-
"""
One SQLite transaction of the store: reads at its serial, and the changes
and file placements a write buffers until it commits.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from zope.interface import implementer

from devpi_tx.store.interfaces import ITransaction
from devpi_tx.store.transactions import WriteBuffer


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _prefix_end(prefix: str) -> str:
    if not prefix:
        return "\U0010ffff"
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@implementer(ITransaction)
class SQLiteTransaction(WriteBuffer):
    """
    Reads are coroutines, as on every engine (a network database answers
    later); here they are answered at once, see L{drive}.
    """

    def __init__(self, conn: sqlite3.Connection, serial: int, writable: bool) -> None:
        super().__init__(serial, writable)
        self._conn = conn

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
