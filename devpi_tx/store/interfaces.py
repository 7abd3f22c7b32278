# -*- test-case-name: tests.store.test_store -*-
"""
Interfaces between the web layer and storage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from devpi_tx.store.files import PreparedFile


@dataclass(frozen=True)
class ChangelogEntry:
    """One committed write: its serial, when it committed, and each changed document's new value (C{None}: deleted)."""

    serial: int
    created: float
    changes: dict[str, Any]


class StorageError(Exception):
    """The database is not usable (wrong schema, not initialised)."""


class StorageFull(Exception):
    """
    A write failed because the disk (or the database's quota) is full;
    nothing of it was kept.  Reads still work, and writes work again once
    there is space.
    """


class ITransaction(Interface):
    """
    A consistent view of the key/value documents as of one serial; a write
    transaction also buffers changes that commit together as one serial.

    Transaction functions are written once for every engine, as coroutines:
    C{async def fn(tx)} awaits C{tx.get} and C{tx.items} (an engine over
    the network answers later; SQLite at once, inside its thread); the
    writes (C{set}, C{delete}, C{place_file}, C{remove_file}) are buffered
    and take effect when the write commits.
    """

    serial = Attribute("The serial this transaction reads at (-1 when empty).")

    def get(key: str) -> Awaitable[Any]:
        """The value stored under C{key}, or C{None}; awaited."""

    def items(prefix: str) -> Awaitable[list[tuple[str, Any]]]:
        """All C{(key, value)} pairs whose key starts with C{prefix}, sorted; awaited."""

    def set(key: str, value: Any) -> None:
        """Store a JSON-able C{value} (write transactions only)."""

    def delete(key: str) -> None:
        """Remove C{key} (write transactions only)."""

    def place_file(temp_path: str, relpath: str) -> None:
        """
        Move the fsynced C{temp_path} to C{relpath} in the file store before
        the metadata commits; undone if the commit fails.
        """

    def remove_file(relpath: str) -> None:
        """Delete C{relpath} from the file store once the commit succeeded."""


class IFileStore(Interface):
    """
    Release files, doc zips and tox results by relpath (their C{+f}/C{+e}
    path).  A write puts its files aside first (the C{prepare} methods, in a
    worker thread); the store places them when the write commits
    (L{ITransaction.place_file}) and removes them when it removes them.
    """

    def local_path(relpath: str) -> str:
        """Where C{relpath} is (or will be placed) on this host's disk, for sendfile and nginx."""

    def exists(relpath: str) -> bool:
        """Whether C{relpath} is stored."""

    def open(relpath: str) -> BinaryIO:
        """C{relpath} for reading in chunks; L{FileNotFoundError} when it is not stored."""

    def prepare_stream(source: BinaryIO) -> PreparedFile:
        """C{source} copied aside while hashed, fsynced, ready to be placed."""

    def prepare_bytes(data: bytes, fsync: bool = True) -> PreparedFile:
        """C{data} put aside, ready to be placed."""

    def prepare_copy(relpath: str) -> PreparedFile:
        """A copy (or hard link) of stored C{relpath} put aside, ready to be placed elsewhere (a push)."""

    def temp_path() -> str:
        """A new name aside, for a write that streams into a file of its own (a mirror download)."""


class ICommitFeed(Interface):
    """
    The serials of committed writes, in order, with what each changed: what
    page caches, workers, event hooks, export and replicas follow.
    """

    last_commit_time = Attribute("When this process last saw a commit (seconds since the epoch).")

    def current_serial() -> int:
        """The newest serial this process knows of."""

    def changelog(since: int, limit: int) -> Deferred[list[ChangelogEntry]]:
        """A Deferred of up to C{limit} L{ChangelogEntry} with serial > C{since}, in order."""

    def subscribe(callback: Callable[[int, dict[str, Any]], None]) -> None:
        """Call C{callback(serial, changes)} after every commit seen by this process, in serial order."""

    def behind() -> bool:
        """Whether another process has committed a serial this process has not seen yet."""

    def missed() -> tuple[int, frozenset[int] | None]:
        """
        The newest serial of any process, and the page groups (as hashes)
        the commits this process has not seen touched; C{None} when unknown
        (too many, or too far behind).
        """

    def poll() -> Deferred[int]:
        """
        A Deferred that fires with the newest serial once this process has
        seen (and told its subscribers of) every commit of the others.
        """


class IStore(ICommitFeed):
    """
    Document storage with one serial per committed write, its commit feed,
    and the file store the writes place files in.
    """

    def read(fn: Callable[[ITransaction], Any]) -> Deferred[Any]:
        """Run C{fn} (a coroutine function, see L{ITransaction}) in a read transaction; a Deferred of its result."""

    def write(
        fn: Callable[[ITransaction], Any], prepare: Callable[[], None] | None = None
    ) -> Deferred[tuple[Any, int]]:
        """
        Run C{fn} in a write transaction and commit; a Deferred of
        C{(result, serial)} where C{serial} is the new serial, or the current
        one when C{fn} changed nothing.  C{prepare}, if given, runs first in
        the same worker thread, before the transaction begins (no lock held):
        work a write needs done first, without another hand-off between
        threads; if it raises, the write fails and the database is untouched.
        """

    files = Attribute("The L{IFileStore} the writes of this store place their files in.")

    def file_path(relpath: str) -> str:
        """Where the file store keeps C{relpath} on this host."""

    def close() -> None:
        """Release connections."""


@dataclass(frozen=True)
class SearchEntry:
    """What the search index keeps of one private version."""

    stage: str
    project: str
    version: str
    name: str
    summary: str
    description: str
    keywords: str


class ISearchIndex(Interface):
    """
    Full-text search over private versions, kept by the search hook from
    the commit feed; each storage engine has its own.
    """

    def apply(entries: list[SearchEntry], removed: list[tuple[str, str, str]], dropped_stages: list[str]) -> None:
        """Put C{entries}, remove C{(stage, project, version)}s and every entry of C{dropped_stages}, at once."""

    def search(query: str, limit: int = 50) -> list[dict[str, str]]:
        """Versions matching every word of C{query} (as prefixes), best first: C{stage, project, version, summary}."""

    def close() -> None:
        """Release connections."""
