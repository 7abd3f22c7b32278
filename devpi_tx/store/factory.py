# -*- test-case-name: tests.store.test_store,tests.events.test_hooks -*-
"""
The storage of a server, built from its options: the one place that picks
an engine (today SQLite, the embedded default), so that nothing outside
C{store/} imports one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from devpi_tx.store.beacon import SerialBeacon
from devpi_tx.store.interfaces import ISearchIndex, IStore, ITransaction, StorageError
from devpi_tx.store.search_sqlite import SQLiteSearchIndex
from devpi_tx.store.sqlite import Runner, SQLiteStore, init_database, migrate

ENGINES = ("sqlite",)


def _check(engine: str) -> None:
    if engine not in ENGINES:
        raise StorageError(f"unknown storage backend {engine!r} (available: {', '.join(ENGINES)})")


def open_store(
    engine: str,
    database: str,
    files: str,
    read_runner: Runner,
    write_runner: Runner,
    beacon: SerialBeacon | None = None,
    groups_of: Callable[[dict[str, Any]], Iterable[str] | None] | None = None,
) -> IStore:
    """The document store of C{engine}; C{read_runner} and C{write_runner} run its work off the reactor."""
    _check(engine)
    return SQLiteStore(database, files, read_runner, write_runner, beacon, groups_of=groups_of)


def open_search_index(engine: str, serverdir: str) -> ISearchIndex:
    """The search index of C{engine}."""
    _check(engine)
    return SQLiteSearchIndex(serverdir)


def open_store_now(database: str, files: str, engine: str = "sqlite") -> SQLiteStore:
    """
    A store for the one-shot commands (export, import, fsck), used in this
    thread with C{read_now} and C{write_now}, without a reactor.
    """
    _check(engine)
    return SQLiteStore(database, files)


def create_database(database: str, initial: Callable[[ITransaction], Any], engine: str = "sqlite") -> None:
    """Create the database with serial 0 written by C{initial}."""
    _check(engine)
    init_database(database, initial)


def upgrade_database(database: str, engine: str = "sqlite") -> int:
    """Bring the schema of the database up to date; its schema version."""
    _check(engine)
    return migrate(database)
