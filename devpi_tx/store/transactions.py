# -*- test-case-name: tests.store.test_store -*-
"""
What the transactions of every engine share: running a transaction
function to its end, and the buffer of a write (its changes and the files
it places or removes, applied when it commits).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
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


def place_files(placements: list[tuple[str, str]], path_of: Callable[[str], str], created: list[str]) -> None:
    """
    Rename the temp files of a write into place in a local file store,
    before its metadata commits; C{created} collects the paths that did not
    exist before (to remove if the commit fails), even when a later rename
    fails.  The last directory is fsynced.
    """
    for temp, relpath in placements:
        target = path_of(relpath)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        existed = os.path.exists(target)
        os.replace(temp, target)
        if not existed:
            created.append(target)
    if placements:
        _fsync_dir(os.path.dirname(path_of(placements[-1][1])))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
