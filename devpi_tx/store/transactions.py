# -*- test-case-name: tests.store.test_store -*-
"""
What the transactions of every engine share: running a transaction
function to its end, and the buffer of a write (its changes and the files
it places or removes, applied when it commits).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any


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


class WriteBuffer:
    """The changes and file placements of a write transaction, until it commits."""

    def __init__(self, serial: int, writable: bool) -> None:
        self.serial = serial
        self._writable = writable
        self.changes: dict[str, Any] = {}
        self.placed: list[tuple[str, str]] = []
        self.removed: list[str] = []

    def place_file(self, temp_path: str, relpath: str) -> None:
        assert self._writable, "read transaction"
        self.placed.append((temp_path, relpath))

    def remove_file(self, relpath: str) -> None:
        assert self._writable, "read transaction"
        self.removed.append(relpath)
