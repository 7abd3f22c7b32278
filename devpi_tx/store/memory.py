# -*- test-case-name: tests.store.test_store -*-
"""
An L{IStore} held in memory, for unit tests that want a store without a
database: it passes the same contract suite as the SQLite store.  Documents
and the changelog live in dicts; files are placed in a real directory, as
every engine's local file store does.  One process, so it is never behind.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from devpi_tx.store.files import LocalFileStore, unlink_if_present
from devpi_tx.store.interfaces import ChangelogEntry, IStore, ITransaction
from devpi_tx.store.transactions import WriteBuffer, drive, place_files


def _copy(value: Any) -> Any:
    # as a database does: what a transaction set is stored as JSON, not by reference
    return None if value is None else json.loads(json.dumps(value))


@implementer(ITransaction)
class MemoryTransaction(WriteBuffer):
    def __init__(self, documents: dict[str, Any], serial: int, writable: bool) -> None:
        super().__init__(serial, writable)
        self._documents = documents

    async def get(self, key: str) -> Any:
        if key in self.changes:
            return copy.deepcopy(self.changes[key])
        return copy.deepcopy(self._documents.get(key))

    async def items(self, prefix: str) -> list[tuple[str, Any]]:
        found = {k: v for k, v in self._documents.items() if k.startswith(prefix)}
        found.update((k, v) for k, v in self.changes.items() if k.startswith(prefix))
        return sorted((k, copy.deepcopy(v)) for k, v in found.items() if v is not None)

    def set(self, key: str, value: Any) -> None:
        assert self._writable, "read transaction"
        self.changes[key] = _copy(value)

    def delete(self, key: str) -> None:
        assert self._writable, "read transaction"
        self.changes[key] = None


@implementer(IStore)
class MemoryStore:
    _log = Logger()

    def __init__(self, files_dir: str, initial: Callable[[ITransaction], Any] | None = None) -> None:
        """C{initial} writes serial 0, as a new server directory's database has it."""
        self.files_dir = files_dir
        self.files = LocalFileStore(files_dir)
        self._documents: dict[str, Any] = {}
        self._changelog: list[ChangelogEntry] = []
        self._subscribers: list[Callable[[int, dict[str, Any]], None]] = []
        self._serial = -1
        self.last_commit_time = time.time()
        if initial is not None:
            tx = MemoryTransaction(self._documents, -1, writable=True)
            drive(initial(tx))
            self._commit(tx.changes)

    def file_path(self, relpath: str) -> str:
        return self.files.local_path(relpath)

    def current_serial(self) -> int:
        return self._serial

    def behind(self) -> bool:
        return False

    def missed(self) -> tuple[int, frozenset[int] | None]:
        return self._serial, frozenset()

    def poll(self) -> Deferred[int]:
        return succeed(self._serial)

    def subscribe(self, callback: Callable[[int, dict[str, Any]], None]) -> None:
        self._subscribers.append(callback)

    def close(self) -> None:
        pass

    def changelog(self, since: int, limit: int) -> Deferred[list[ChangelogEntry]]:
        return succeed([e for e in self._changelog if e.serial > since][:limit])

    def read(self, fn: Callable[[ITransaction], Any]) -> Deferred[Any]:
        try:
            return succeed(drive(fn(MemoryTransaction(self._documents, self._serial, writable=False))))
        except Exception:
            return fail()

    def write(
        self, fn: Callable[[ITransaction], Any], prepare: Callable[[], None] | None = None
    ) -> Deferred[tuple[Any, int]]:
        try:
            return succeed(self._write(fn, prepare))
        except Exception:
            return fail()

    def _write(self, fn: Callable[[ITransaction], Any], prepare: Callable[[], None] | None) -> tuple[Any, int]:
        if prepare is not None:
            prepare()
        tx = MemoryTransaction(self._documents, self._serial, writable=True)
        created: list[str] = []
        try:
            result = drive(fn(tx))
            changes = {k: v for k, v in tx.changes.items() if v != self._documents.get(k)}
            if not changes:
                for temp, _ in tx.placed:
                    unlink_if_present(temp)
                return result, self._serial
            place_files(tx.placed, self.file_path, created)
        except BaseException:
            for path in created:
                unlink_if_present(path)
            for temp, _ in tx.placed:
                unlink_if_present(temp)
            raise
        kept = {relpath for _, relpath in tx.placed}
        for relpath in tx.removed:
            if relpath not in kept:
                unlink_if_present(self.file_path(relpath))
        return result, self._commit(changes)

    def _commit(self, changes: dict[str, Any]) -> int:
        self._serial += 1
        for key, value in changes.items():
            if value is None:
                self._documents.pop(key, None)
            else:
                self._documents[key] = value
        self._changelog.append(ChangelogEntry(self._serial, time.time(), copy.deepcopy(changes)))
        self.last_commit_time = time.time()
        for callback in self._subscribers:
            try:
                callback(self._serial, changes)
            except Exception:
                self._log.failure("commit subscriber failed")
        return self._serial
