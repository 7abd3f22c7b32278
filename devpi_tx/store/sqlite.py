# -*- test-case-name: tests.store.test_store -*-
"""
SQLite storage: JSON documents keyed by path-like strings, one serial and
one changelog row per committed write transaction.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from zope.interface import implementer

from devpi_tx.store.beacon import SerialBeacon
from devpi_tx.store.files import LocalFileStore, unlink_if_present
from devpi_tx.store.interfaces import ChangelogEntry, IStore, ITransaction, StorageError, StorageFull
from devpi_tx.store.sqlite_tx import SQLiteTransaction, dumps
from devpi_tx.store.transactions import drive, place_files

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

# Twisted is imported where it is used: the one-shot commands (export,
# import, fsck) use the store synchronously and start faster without it.

T = TypeVar("T")
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]

SCHEMA_VERSION = 1


def inline_runner(fn: Callable[[], T]) -> Deferred[T]:
    """Run C{fn} at once in this thread (tests)."""
    from twisted.internet.defer import maybeDeferred

    return maybeDeferred(fn)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _is_full(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "database or disk is full" in str(error)


def _rollback(conn: sqlite3.Connection) -> None:
    """
    Roll back what is left of a failed write.  SQLite may have rolled back
    by itself (a full disk does that); a failing rollback must not hide the
    error that caused it.
    """
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as e:
        from twisted.logger import Logger

        Logger(namespace=__name__).error("rollback after a failed write failed: {error}", error=e)


def _schema_files() -> list[tuple[int, str]]:
    found = []
    schema = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema")
    for name in os.listdir(schema):
        if name.endswith(".sql"):
            with open(os.path.join(schema, name), encoding="utf-8") as f:
                found.append((int(name.split("-", 1)[0]), f.read()))
    return sorted(found)


def migrate(path: str) -> int:
    """
    Create or upgrade the schema of the database at C{path}; returns the
    schema version.

    @raise StorageError: the database is newer than this code.
    """
    conn = _connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{path} has schema version {version}, newer than this server's "
                f"{SCHEMA_VERSION}: use a newer devpi_tx, or export and import"
            )
        for number, sql in _schema_files():
            if number > version:
                conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")
                version = number
        return int(version)
    finally:
        conn.close()


@implementer(IStore)
class SQLiteStore:
    """
    L{IStore} on one SQLite file.  Work runs through C{read_runner} and
    C{write_runner} (thread pools in production, L{inline_runner} in tests).
    """

    def __init__(
        self,
        path: str,
        files_dir: str,
        read_runner: Runner = inline_runner,
        write_runner: Runner = inline_runner,
        beacon: SerialBeacon | None = None,
        groups_of: Callable[[dict[str, Any]], Iterable[str] | None] | None = None,
    ) -> None:
        """
        C{beacon} shares serials with the other processes on the same file;
        C{groups_of} names, for the beacon, the groups (of cached pages) a
        commit's changes touch, C{None} for all of them.
        """
        self._path = path
        self.files_dir = files_dir
        self.files = LocalFileStore(files_dir)
        self._beacon = beacon
        self._groups_of = groups_of
        self._read_runner = read_runner
        self._write_runner = write_runner
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[int, dict[str, Any]], None]] = []
        self._polling = False
        self._polls_started = 0
        self._poll_waiters: list[tuple[int, int | None, Deferred[int]]] = []
        conn = self._conn()
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            raise StorageError(f"{path} is not a devpi_tx database of schema {SCHEMA_VERSION}")
        self._serial = self._max_serial(conn)
        self.last_commit_time = time.time()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self._path)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @staticmethod
    def _max_serial(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT max(serial) FROM changelog").fetchone()
        return -1 if row[0] is None else int(row[0])

    def file_path(self, relpath: str) -> str:
        return self.files.local_path(relpath)

    def current_serial(self) -> int:
        return self._serial

    def behind(self) -> bool:
        """Whether another process committed a serial this one has not seen."""
        return self._beacon is not None and self._beacon.read() > self._serial

    def missed(self) -> tuple[int, frozenset[int] | None]:
        """
        The newest serial of any process and the group hashes (see
        L{devpi_tx.store.beacon}) touched by the commits this process has not
        seen yet; C{None} for those when unknown.
        """
        if self._beacon is None:
            return self._serial, frozenset()
        newest = self._beacon.read()
        return newest, self._beacon.touched(self._serial, newest)

    def subscribe(self, callback: Callable[[int, dict[str, Any]], None]) -> None:
        self._subscribers.append(callback)

    def _notify(self, serial: int, changes: dict[str, Any]) -> None:
        if serial > self._serial:
            self._serial = serial
        self.last_commit_time = time.time()
        for callback in self._subscribers:
            try:
                callback(serial, changes)
            except Exception:
                from twisted.logger import Logger

                Logger(namespace=__name__).failure("commit subscriber failed")

    # transaction functions are coroutines (or plain functions that only write)
    @overload
    def read(self, fn: Callable[[ITransaction], Awaitable[T]]) -> Deferred[T]: ...
    @overload
    def read(self, fn: Callable[[ITransaction], T]) -> Deferred[T]: ...
    def read(self, fn: Callable[[ITransaction], Any]) -> Deferred[Any]:
        return self._read_runner(self._read_job(fn))

    @overload
    def read_now(self, fn: Callable[[ITransaction], Awaitable[T]]) -> T: ...
    @overload
    def read_now(self, fn: Callable[[ITransaction], T]) -> T: ...
    def read_now(self, fn: Callable[[ITransaction], Any]) -> Any:
        """L{read} in this thread, for the one-shot commands (no reactor, no Deferred)."""
        return self._read_job(fn)()

    @overload
    def write(
        self, fn: Callable[[ITransaction], Awaitable[T]], prepare: Callable[[], None] | None = None
    ) -> Deferred[tuple[T, int]]: ...
    @overload
    def write(
        self, fn: Callable[[ITransaction], T], prepare: Callable[[], None] | None = None
    ) -> Deferred[tuple[T, int]]: ...
    def write(
        self, fn: Callable[[ITransaction], Any], prepare: Callable[[], None] | None = None
    ) -> Deferred[tuple[Any, int]]:
        run, done = self._write_job(fn, prepare)
        return self._write_runner(run).addCallback(done)

    @overload
    def write_now(self, fn: Callable[[ITransaction], Awaitable[T]]) -> tuple[T, int]: ...
    @overload
    def write_now(self, fn: Callable[[ITransaction], T]) -> tuple[T, int]: ...
    def write_now(self, fn: Callable[[ITransaction], Any]) -> tuple[Any, int]:
        """L{write} in this thread, for the one-shot commands (no reactor, no Deferred)."""
        run, done = self._write_job(fn)
        return done(run())

    def _read_job(self, fn: Callable[[ITransaction], T]) -> Callable[[], T]:
        def run() -> T:
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                tx = SQLiteTransaction(conn, self._max_serial(conn), writable=False)
                return drive(fn(tx))  # type: ignore[no-any-return]
            finally:
                conn.execute("ROLLBACK")

        return run

    def _write_job(
        self, fn: Callable[[ITransaction], T], prepare: Callable[[], None] | None = None
    ) -> tuple[Callable[[], Any], Callable[[Any], tuple[T, int]]]:
        # the serial this process had seen when the write was asked for, read
        # here on the reactor thread: the job in the writer thread must not read
        # what the reactor thread writes (done() skips what was heard since)
        seen = self._serial

        def run() -> tuple[T, int, dict[str, Any] | None, list[ChangelogEntry]]:
            if prepare is not None:
                prepare()
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            committed = False
            created: list[str] = []
            tx = SQLiteTransaction(conn, self._max_serial(conn), writable=True)
            missed: list[ChangelogEntry] = []
            try:
                result = drive(fn(tx))
                serial = tx.serial
                changes = {k: v for k, v in tx.changes.items() if v != tx._stored(k)}
                if not changes:
                    return result, serial, None, missed
                missed = self._entries_between(conn, seen, serial)
                serial += 1
                for key, value in changes.items():
                    if value is None:
                        conn.execute("DELETE FROM kv WHERE key = ?", (key,))
                    else:
                        conn.execute(
                            "INSERT OR REPLACE INTO kv (key, value, serial) VALUES (?, ?, ?)",
                            (key, dumps(value), serial),
                        )
                conn.execute(
                    "INSERT INTO changelog (serial, created, changes) VALUES (?, ?, ?)",
                    (serial, time.time(), dumps(changes)),
                )
                place_files(tx.placed, self.file_path, created)
                groups = self._groups_of(changes) if self._groups_of is not None else None
                conn.execute("COMMIT")
                committed = True
                if self._beacon is not None:
                    self._beacon.update(serial, groups)
            except sqlite3.OperationalError as e:
                if _is_full(e):
                    raise StorageFull(f"the database cannot grow: {e}") from e
                raise
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StorageFull(f"the file store cannot grow: {e.strerror}") from e
                raise
            finally:
                if not committed:
                    _rollback(conn)
                    for path in created:
                        unlink_if_present(path)
                    for temp, _ in tx.placed:
                        unlink_if_present(temp)
            kept = {relpath for _, relpath in tx.placed}
            for relpath in tx.removed:
                if relpath not in kept:
                    unlink_if_present(self.file_path(relpath))
            return result, serial, changes, missed

        def done(outcome: tuple[T, int, dict[str, Any] | None, list[ChangelogEntry]]) -> tuple[T, int]:
            result, serial, changes, missed = outcome
            for entry in missed:
                if entry.serial > self._serial:
                    self._notify(entry.serial, entry.changes)
            if changes is not None:
                self._notify(serial, changes)
            return result, serial

        return run, done

    @staticmethod
    def _entries_between(conn: sqlite3.Connection, low: int, high: int) -> list[ChangelogEntry]:
        """Changelog entries with C{low < serial <= high} (commits of other processes)."""
        if high <= low:
            return []
        rows = conn.execute(
            "SELECT serial, created, changes FROM changelog WHERE serial > ? AND serial <= ? ORDER BY serial",
            (low, high),
        ).fetchall()
        return [ChangelogEntry(s, c, json.loads(ch)) for s, c, ch in rows]

    def changelog(self, since: int, limit: int) -> Deferred[list[ChangelogEntry]]:
        def run() -> list[ChangelogEntry]:
            rows = (
                self._conn()
                .execute(
                    "SELECT serial, created, changes FROM changelog WHERE serial > ? ORDER BY serial LIMIT ?",
                    (since, limit),
                )
                .fetchall()
            )
            return [ChangelogEntry(s, c, json.loads(ch)) for s, c, ch in rows]

        return self._read_runner(run)

    def poll(self) -> Deferred[int]:
        """
        Notice commits made by other processes: subscribers hear of every
        serial between the known one and the newest; the serial known then.

        One poll runs at a time.  A caller that comes while one runs is
        answered by it if it brings the serial the beacon showed the caller,
        else by the next one (started when the running one ends); a poll
        started after the caller came always answers it.
        """
        from twisted.internet.defer import Deferred

        target = self._beacon.read() if self._beacon is not None else None
        waiter: Deferred[int] = Deferred()
        self._poll_waiters.append((self._polls_started, target, waiter))
        if not self._polling:
            self._start_poll()
        return waiter

    def _start_poll(self) -> None:
        from twisted.python.failure import Failure

        self._polling = True
        self._polls_started += 1
        number = self._polls_started

        def finished(result: int | Failure) -> None:
            self._polling = False
            ready, later = [], []
            for entry in self._poll_waiters:
                joined, target, waiter = entry
                done = joined < number or target is None or target <= self._serial
                if isinstance(result, Failure) or done:
                    ready.append(waiter)
                else:
                    later.append(entry)
            self._poll_waiters = later
            for waiter in ready:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(self._serial)
            if self._poll_waiters and not self._polling:
                self._start_poll()

        self._poll_once().addBoth(finished)

    def _poll_once(self) -> Deferred[int]:
        seen = self._serial  # read on the reactor thread, see _write_job

        def run() -> list[ChangelogEntry]:
            conn = self._conn()
            rows = conn.execute(
                "SELECT serial, created, changes FROM changelog WHERE serial > ? ORDER BY serial",
                (seen,),
            ).fetchall()
            return [ChangelogEntry(s, c, json.loads(ch)) for s, c, ch in rows]

        def notify(entries: list[ChangelogEntry]) -> int:
            for entry in entries:
                if entry.serial > self._serial:
                    self._notify(entry.serial, entry.changes)
            return self._serial

        return self._read_runner(run).addCallback(notify)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


def init_database(path: str, initial: Callable[[ITransaction], Any]) -> None:
    """
    Create the database at C{path} and commit serial 0 written by C{initial}.
    """
    migrate(path)
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT count(*) FROM changelog").fetchone()[0]:
            conn.execute("ROLLBACK")
            return
        tx = SQLiteTransaction(conn, -1, writable=True)
        drive(initial(tx))
        for key, value in tx.changes.items():
            conn.execute("INSERT INTO kv (key, value, serial) VALUES (?, ?, 0)", (key, dumps(value)))
        conn.execute(
            "INSERT INTO changelog (serial, created, changes) VALUES (0, ?, ?)",
            (time.time(), dumps(tx.changes)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
