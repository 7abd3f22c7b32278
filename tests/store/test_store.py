"""
Tests for the storage backends: one contract suite (L{StoreContract}) that
every L{IStore} must pass, run here against L{SQLiteStore}, plus tests of
what only SQLite has (several processes on one file, schema versions).
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from devpi_tx.store.beacon import SerialBeacon
from devpi_tx.store.interfaces import ChangelogEntry, IFileStore, IStore, ITransaction, StorageError
from devpi_tx.store.memory import MemoryStore
from devpi_tx.store.sqlite import (
    SCHEMA_VERSION,
    SQLiteStore,
    init_database,
    migrate,
)

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


INITIAL: dict[str, Any] = {
    "u/root": {"username": "root", "pwhash": "x"},
    "i/root/pypi": {"type": "mirror", "volatile": False},
}


def initial(tx: ITransaction) -> None:
    for key, value in INITIAL.items():
        tx.set(key, value)


def values_of(*keys: str) -> Callable[[ITransaction], Coroutine[Any, Any, tuple[Any, ...]]]:
    """A transaction function reading C{keys}: their values."""

    async def read(tx: ITransaction) -> tuple[Any, ...]:
        return tuple([await tx.get(key) for key in keys])

    return read


def serial_and(*keys: str) -> Callable[[ITransaction], Coroutine[Any, Any, tuple[Any, ...]]]:
    """A transaction function reading C{keys}: the serial, then their values."""

    async def read(tx: ITransaction) -> tuple[Any, ...]:
        return (tx.serial, *[await tx.get(key) for key in keys])

    return read


def copying(source: str, target: str) -> Callable[[ITransaction], Coroutine[Any, Any, None]]:
    """A transaction function setting C{target} to the value of C{source}."""

    async def copy(tx: ITransaction) -> None:
        tx.set(target, await tx.get(source))

    return copy


class Boom(Exception):
    """Raised by write functions to force a rollback."""


class StoreContract(_Base):
    """
    What every L{IStore} must do.  C{make_store} returns a store holding
    L{INITIAL} as serial 0; files are checked through its file store
    (C{store.files}), so the suite runs unchanged on an engine that keeps
    files elsewhere than in a local directory.
    """

    files_dir: str

    def make_store(self) -> Any:
        raise NotImplementedError()

    def temp_file(self, content: bytes) -> str:
        """A file outside the file store, as an upload's temp file."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "upload.tmp")
        with open(path, "wb") as f:
            f.write(content)
        return path

    def stored_bytes(self, store: Any, relpath: str) -> bytes:
        """A stored file's content, read through the store's file store (as on every engine)."""
        with store.files.open(relpath) as f:
            return f.read()  # type: ignore[no-any-return]

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    async def all_changes(self, store: Any) -> list[tuple[int, dict[str, Any]]]:
        entries = await store.changelog(-1, 1000)
        return [(e.serial, e.changes) for e in entries]

    async def test_provides_interfaces(self) -> None:
        """
        The store provides L{IStore} and its transactions L{ITransaction}.
        """
        store = self.make_store()
        self.assertTrue(verifyObject(IStore, store))
        self.assertTrue(await store.read(lambda tx: verifyObject(ITransaction, tx)))
        result, _ = await store.write(lambda tx: verifyObject(ITransaction, tx))
        self.assertTrue(result)

    async def test_initial(self) -> None:
        """
        After initialisation the serial is 0, the changelog has exactly one
        entry (serial 0 with the initial documents) and reads see them.
        """
        store = self.make_store()
        self.assertEqual(store.current_serial(), 0)
        self.assertEqual(await self.all_changes(store), [(0, INITIAL)])
        values = await store.read(serial_and("u/root", "nope"))
        self.assertEqual(values, (0, INITIAL["u/root"], None))

    async def test_write_serials(self) -> None:
        """
        Each committing write gets the next serial and one changelog row with
        exactly the keys it changed and their new values, C{None} for
        deletes; reads then see the new state.
        """
        store = self.make_store()

        def first(tx: ITransaction) -> str:
            tx.set("u/alice", {"username": "alice"})
            return "done"

        self.assertEqual(await store.write(first), ("done", 1))
        self.assertEqual(store.current_serial(), 1)

        def second(tx: ITransaction) -> None:
            tx.set("i/alice/dev", {"type": "stage"})
            tx.delete("u/root")
            tx.set("u/alice", {"username": "alice", "email": "a@example.com"})

        self.assertEqual(await store.write(second), (None, 2))
        self.assertEqual(store.current_serial(), 2)
        self.assertEqual(
            (await self.all_changes(store))[1:],
            [
                (1, {"u/alice": {"username": "alice"}}),
                (
                    2,
                    {
                        "i/alice/dev": {"type": "stage"},
                        "u/root": None,
                        "u/alice": {"username": "alice", "email": "a@example.com"},
                    },
                ),
            ],
        )
        state = await store.read(serial_and("u/root", "u/alice", "i/alice/dev"))
        self.assertEqual(state, (2, None, {"username": "alice", "email": "a@example.com"}, {"type": "stage"}))

    async def test_changelog_entries(self) -> None:
        """
        Changelog entries are L{ChangelogEntry} values with a creation time.
        """
        store = self.make_store()
        await store.write(lambda tx: tx.set("k", 1))
        [entry] = await store.changelog(0, 10)
        self.assertIsInstance(entry, ChangelogEntry)
        self.assertEqual(entry.serial, 1)
        self.assertIsInstance(entry.created, float)
        self.assertGreater(entry.created, 0)

    async def test_noop_write(self) -> None:
        """
        A write that changes nothing (only reads, sets a key to the value it
        has, deletes a key that does not exist) creates no serial, no
        changelog row and no notification, and answers the current serial.
        """
        store = self.make_store()
        heard: list[int] = []
        store.subscribe(lambda serial, changes: heard.append(serial))

        self.assertEqual(await store.write(lambda tx: tx.get("u/root")), (INITIAL["u/root"], 0))

        def same(tx: ITransaction) -> None:
            tx.set("u/root", dict(INITIAL["u/root"]))
            tx.delete("never/there")

        self.assertEqual(await store.write(same), (None, 0))
        self.assertEqual(store.current_serial(), 0)
        self.assertEqual(await self.all_changes(store), [(0, INITIAL)])
        self.assertEqual(heard, [])

    async def test_net_noop_write(self) -> None:
        """
        A write whose changes cancel out (a key changed and set back, a new
        key set and deleted again) changes nothing, so it creates no serial.
        """
        store = self.make_store()

        def cancel(tx: ITransaction) -> None:
            tx.set("u/root", {"username": "changed"})
            tx.set("u/root", dict(INITIAL["u/root"]))
            tx.set("u/new", 1)
            tx.delete("u/new")

        self.assertEqual(await store.write(cancel), (None, 0))
        self.assertEqual(await self.all_changes(store), [(0, INITIAL)])

    async def test_file_store(self) -> None:
        """
        The store's L{IFileStore}: files put aside (from a stream, bytes or a
        stored file) are hashed, placed by a write, then read back, and are
        not visible before.
        """
        store = self.make_store()
        files = store.files
        self.assertTrue(verifyObject(IFileStore, files))
        streamed = files.prepare_stream(io.BytesIO(b"wheel" * 1000))
        self.assertEqual((streamed.sha256, streamed.size), (hashlib.sha256(b"wheel" * 1000).hexdigest(), 5000))
        relpath = "root/dev/+f/abc/def/pkg-1.0.whl"
        self.assertFalse(files.exists(relpath))
        with self.assertRaises(FileNotFoundError):
            files.open(relpath)

        def place(tx: ITransaction) -> None:
            tx.set(f"f/{relpath}", {"size": 5000})
            tx.place_file(streamed.temp_path, relpath)

        await store.write(place)
        self.assertTrue(files.exists(relpath))
        with files.open(relpath) as f:
            self.assertEqual(f.read(), b"wheel" * 1000)
        copy = files.prepare_copy(relpath)
        self.assertEqual(copy.sha256, streamed.sha256)
        small = files.prepare_bytes(b"tox")
        self.assertEqual(small.size, 3)
        for prepared in (copy, small):
            self.assertNotEqual(prepared.temp_path, files.local_path(relpath))
            prepared.discard()
        self.assertNotEqual(files.temp_path(), files.temp_path())

    async def test_coroutine_transactions(self) -> None:
        """
        Transaction functions are coroutines that await their reads; writes
        made after an awaited read commit with it, and a read sees the
        transaction's own earlier writes.
        """
        store = self.make_store()

        async def promote(tx: ITransaction) -> tuple[Any, Any]:
            root = await tx.get("u/root")
            tx.set("u/alice", dict(root, username="alice"))
            return await tx.get("u/alice"), [k for k, _ in await tx.items("u/")]

        (alice, names), serial = await store.write(promote)
        self.assertEqual((alice["username"], names, serial), ("alice", ["u/alice", "u/root"], 1))
        self.assertEqual(await store.read(values_of("u/alice")), (alice,))

    async def test_transaction_waiting_on_something_else(self) -> None:
        """
        A transaction function that waits on anything but its transaction
        fails, and nothing of it is kept: a transaction never spans a turn
        of the reactor.
        """
        store = self.make_store()
        never: Deferred[None] = Deferred()

        async def waits(tx: ITransaction) -> None:
            tx.set("u/alice", {})
            await never

        with self.assertRaises(RuntimeError):
            await store.write(waits)
        self.assertEqual(store.current_serial(), 0)
        self.assertEqual(await store.read(values_of("u/alice")), (None,))

    async def test_exception_rolls_back(self) -> None:
        """
        An exception in the write function propagates and undoes everything:
        no serial, no changed document, no notification; the placed temp
        file is removed and never reaches its target.  The store stays
        usable.
        """
        store = self.make_store()
        heard: list[int] = []
        store.subscribe(lambda serial, changes: heard.append(serial))
        temp = self.temp_file(b"wheel")

        def fail(tx: ITransaction) -> None:
            tx.set("u/root", {"username": "changed"})
            tx.delete("i/root/pypi")
            tx.set("u/alice", {})
            tx.place_file(temp, "root/dev/+f/abc/pkg-1.0.whl")
            raise Boom()

        with self.assertRaises(Boom):
            await store.write(fail)
        self.assertEqual(store.current_serial(), 0)
        self.assertEqual(await self.all_changes(store), [(0, INITIAL)])
        self.assertEqual(heard, [])
        state = await store.read(values_of("u/root", "i/root/pypi", "u/alice"))
        self.assertEqual(state, (INITIAL["u/root"], INITIAL["i/root/pypi"], None))
        self.assertFalse(os.path.exists(temp))
        self.assertFalse(store.files.exists("root/dev/+f/abc/pkg-1.0.whl"))

        self.assertEqual(await store.write(lambda tx: tx.set("k", 1)), (None, 1))

    async def test_prepare(self) -> None:
        """
        C{prepare} runs before the write function (which sees what it made);
        when it raises, the write fails, the function never runs and nothing
        changes.  The store stays usable.
        """
        store = self.make_store()
        order: list[str] = []
        temp = self.temp_file(b"wheel")

        def prepare() -> None:
            order.append("prepare")

        def upload(tx: ITransaction) -> None:
            order.append("write")
            tx.set("f/root/dev/+f/abc/pkg-1.0.whl", {"size": 5})
            tx.place_file(temp, "root/dev/+f/abc/pkg-1.0.whl")

        self.assertEqual(await store.write(upload, prepare), (None, 1))
        self.assertEqual(order, ["prepare", "write"])
        self.assertEqual(self.stored_bytes(store, "root/dev/+f/abc/pkg-1.0.whl"), b"wheel")

        def broken() -> None:
            order.append("broken")
            raise Boom()

        with self.assertRaises(Boom):
            await store.write(lambda tx: tx.set("k", 1), broken)
        self.assertEqual(order, ["prepare", "write", "broken"])
        self.assertEqual(store.current_serial(), 1)
        self.assertEqual(await store.read(lambda tx: tx.get("k")), None)
        self.assertEqual(await store.write(lambda tx: tx.set("k", 2)), (None, 2))

    async def test_place_file(self) -> None:
        """
        A committed C{place_file} moves the temp file to C{relpath} in the
        file store, creating directories.
        """
        store = self.make_store()
        temp = self.temp_file(b"wheel contents")
        relpath = "root/dev/+f/a1b/2c3/pkg-1.0-py3-none-any.whl"

        def upload(tx: ITransaction) -> None:
            tx.set(f"f/{relpath}", {"size": 14})
            tx.place_file(temp, relpath)

        await store.write(upload)
        self.assertFalse(os.path.exists(temp))
        self.assertEqual(self.stored_bytes(store, relpath), b"wheel contents")

    async def test_place_file_failure_undone(self) -> None:
        """
        When placing the files of a write fails part way (here the second
        temp file is gone), the write fails as a whole: no serial, and the
        file already moved for the first placement is not left behind in
        the file store.
        """
        store = self.make_store()
        first = self.temp_file(b"metadata")
        missing = os.path.join(self.mktemp(), "gone.tmp")

        def upload(tx: ITransaction) -> None:
            tx.set("f/root/dev/+f/abc/pkg-1.0.whl", {"size": 5})
            tx.place_file(first, "root/dev/+f/abc/pkg-1.0.whl.metadata")
            tx.place_file(missing, "root/dev/+f/abc/pkg-1.0.whl")

        with self.assertRaises(OSError):
            await store.write(upload)
        self.assertEqual(store.current_serial(), 0)
        self.assertEqual(await self.all_changes(store), [(0, INITIAL)])
        self.assertFalse(store.files.exists("root/dev/+f/abc/pkg-1.0.whl"))
        self.assertFalse(store.files.exists("root/dev/+f/abc/pkg-1.0.whl.metadata"))

    async def test_remove_file(self) -> None:
        """
        C{remove_file} deletes the file once the write commits, and not at
        all when the write fails.
        """
        store = self.make_store()
        relpath = "root/dev/+f/abc/pkg-1.0.tar.gz"
        temp = self.temp_file(b"x")
        await store.write(lambda tx: (tx.set("f/x", 1), tx.place_file(temp, relpath)))
        self.assertTrue(store.files.exists(relpath))

        def fail(tx: ITransaction) -> None:
            tx.delete("f/x")
            tx.remove_file(relpath)
            raise Boom()

        with self.assertRaises(Boom):
            await store.write(fail)
        self.assertTrue(store.files.exists(relpath))

        def remove(tx: ITransaction) -> None:
            tx.delete("f/x")
            tx.remove_file(relpath)
            # not gone before the commit
            assert store.files.exists(relpath)

        await store.write(remove)
        self.assertFalse(store.files.exists(relpath))

    async def test_remove_missing_file(self) -> None:
        """
        Removing a file that is not there is no error.
        """
        store = self.make_store()

        def remove(tx: ITransaction) -> None:
            tx.set("k", 1)
            tx.remove_file("root/dev/+f/abc/never.whl")

        self.assertEqual(await store.write(remove), (None, 1))

    async def test_remove_file_placed_in_same_write(self) -> None:
        """
        A relpath both removed and placed in one write (a volatile overwrite
        with the same content) keeps the newly placed file, whatever the
        order of the calls.
        """
        store = self.make_store()
        relpath = "root/dev/+f/abc/pkg-1.0.tar.gz"
        old = self.temp_file(b"old")
        await store.write(lambda tx: (tx.set("k", 0), tx.place_file(old, relpath)))

        for n, content in enumerate((b"new", b"newer"), start=1):
            temp = self.temp_file(content)

            def overwrite(tx: ITransaction, n: int = n, temp: str = temp) -> None:
                tx.set("k", n)
                if n == 1:
                    tx.remove_file(relpath)
                    tx.place_file(temp, relpath)
                else:
                    tx.place_file(temp, relpath)
                    tx.remove_file(relpath)

            await store.write(overwrite)
            self.assertEqual(self.stored_bytes(store, relpath), content)

    async def test_items(self) -> None:
        """
        C{items(prefix)} gives the documents under C{prefix} sorted by key,
        including the transaction's own uncommitted writes and without keys
        it deleted; C{u/a/} does not see C{u/ab/...} nor C{u/a}.
        """
        store = self.make_store()

        def setup(tx: ITransaction) -> None:
            for key in ("u/a/2", "u/a", "u/ab/1", "u/a/1", "u/a/3", "u/b/1", "u/a0"):
                tx.set(key, key.upper())

        await store.write(setup)
        self.assertEqual(
            await store.read(lambda tx: tx.items("u/a/")),
            [("u/a/1", "U/A/1"), ("u/a/2", "U/A/2"), ("u/a/3", "U/A/3")],
        )
        self.assertEqual(await store.read(lambda tx: tx.items("u/ab/")), [("u/ab/1", "U/AB/1")])
        self.assertEqual(await store.read(lambda tx: tx.items("u/c/")), [])

        async def change(tx: ITransaction) -> list[tuple[str, Any]]:
            tx.set("u/a/0", "new")
            tx.set("u/a/25", "new")
            tx.set("u/a/1", "changed")
            tx.delete("u/a/2")
            tx.set("u/ab/2", "other prefix")
            tx.set("u/a", "not below u/a/")
            return await tx.items("u/a/")

        inside, _ = await store.write(change)
        expected = [
            ("u/a/0", "new"),
            ("u/a/1", "changed"),
            ("u/a/25", "new"),
            ("u/a/3", "U/A/3"),
        ]
        self.assertEqual(inside, expected)
        self.assertEqual(await store.read(lambda tx: tx.items("u/a/")), expected)

    async def test_items_empty_prefix(self) -> None:
        """
        Every key starts with the empty prefix: C{items("")} lists all
        documents.
        """
        store = self.make_store()
        everything = await store.read(lambda tx: tx.items(""))
        self.assertEqual(everything, sorted(INITIAL.items()))

    async def test_get_in_write(self) -> None:
        """
        C{get} in a write sees the transaction's own sets and deletes, and
        stores a copy: changing the value after C{set} changes nothing.
        """
        store = self.make_store()

        async def work(tx: ITransaction) -> tuple[Any, Any]:
            value = {"list": [1]}
            tx.set("k", value)
            value["list"].append(2)
            tx.delete("u/root")
            return await tx.get("k"), await tx.get("u/root")

        result, _serial = await store.write(work)
        self.assertEqual(result, ({"list": [1]}, None))
        self.assertEqual(await store.read(lambda tx: tx.get("k")), {"list": [1]})

    async def test_read_cannot_write(self) -> None:
        """
        Read transactions refuse every write method with L{AssertionError};
        nothing changes and the store stays usable.
        """
        store = self.make_store()
        temp = self.temp_file(b"x")
        attempts = [
            lambda tx: tx.set("k", 1),
            lambda tx: tx.delete("u/root"),
            lambda tx: tx.place_file(temp, "a/b"),
            lambda tx: tx.remove_file("a/b"),
        ]
        for attempt in attempts:
            with self.assertRaises(AssertionError):
                await store.read(attempt)
        self.assertEqual(store.current_serial(), 0)
        self.assertEqual(await self.all_changes(store), [(0, INITIAL)])
        self.assertEqual(await store.read(lambda tx: tx.get("u/root")), INITIAL["u/root"])
        self.assertTrue(os.path.exists(temp))
        self.assertEqual(await store.write(lambda tx: tx.set("k", 1)), (None, 1))

    async def test_read_exception(self) -> None:
        """
        An exception in a read function propagates and leaves the store
        usable.
        """
        store = self.make_store()

        def fail(tx: ITransaction) -> None:
            raise Boom()

        with self.assertRaises(Boom):
            await store.read(fail)
        self.assertEqual(await store.write(lambda tx: tx.set("k", 1)), (None, 1))
        self.assertEqual(await store.read(lambda tx: tx.get("k")), 1)

    async def test_subscribe(self) -> None:
        """
        Every subscriber is called with C{(serial, changes)} after each
        commit.
        """
        store = self.make_store()
        first: list[tuple[int, dict[str, Any]]] = []
        second: list[tuple[int, dict[str, Any]]] = []
        store.subscribe(lambda serial, changes: first.append((serial, dict(changes))))
        store.subscribe(lambda serial, changes: second.append((serial, dict(changes))))
        await store.write(lambda tx: tx.set("a", 1))
        await store.write(lambda tx: (tx.set("b", [2]), tx.delete("a")))
        expected = [(1, {"a": 1}), (2, {"b": [2], "a": None})]
        self.assertEqual(first, expected)
        self.assertEqual(second, expected)

    async def test_failing_subscriber(self) -> None:
        """
        A subscriber that raises is logged; the write still succeeds and
        later subscribers are still called.
        """
        store = self.make_store()
        heard: list[int] = []

        def broken(serial: int, changes: dict[str, Any]) -> None:
            raise ZeroDivisionError()

        store.subscribe(broken)
        store.subscribe(lambda serial, changes: heard.append(serial))
        self.assertEqual(await store.write(lambda tx: tx.set("a", 1)), (None, 1))
        self.assertEqual(heard, [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_changelog_paging(self) -> None:
        """
        C{changelog(since, limit)} gives at most C{limit} entries with serial
        greater than C{since}, in order.
        """
        store = self.make_store()
        for n in range(1, 6):
            await store.write(lambda tx, n=n: tx.set(f"k/{n}", n))

        async def page(since: int, limit: int) -> list[int]:
            return [e.serial for e in await store.changelog(since, limit)]

        self.assertEqual(await page(-1, 2), [0, 1])
        self.assertEqual(await page(1, 2), [2, 3])
        self.assertEqual(await page(3, 2), [4, 5])
        self.assertEqual(await page(5, 2), [])
        self.assertEqual(await page(0, 100), [1, 2, 3, 4, 5])
        self.assertEqual(await page(2, 1), [3])
        entries = await store.changelog(3, 1)
        self.assertEqual(entries[0].changes, {"k/4": 4})


class MemoryStoreTests(StoreContract, TestCase):
    """L{MemoryStore} passes the store contract too."""

    def make_store(self) -> MemoryStore:
        self.files_dir = os.path.abspath(self.mktemp())
        return MemoryStore(self.files_dir, initial)


class SQLiteStoreTests(StoreContract, TestCase):
    """
    L{SQLiteStore} passes the store contract, and shares one database file
    between processes.
    """

    def make_database(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        db = os.path.join(path, "devpi.sqlite")
        init_database(db, initial)
        return db

    def open(self, db: str) -> SQLiteStore:
        store = SQLiteStore(db, self.files_dir)
        self.addCleanup(store.close)
        return store

    def make_store(self) -> SQLiteStore:
        db = self.make_database()
        self.files_dir = os.path.join(os.path.dirname(db), "+files")
        return self.open(db)

    async def test_prepare_in_writer_thread_without_lock(self) -> None:
        """
        With a thread pool as writer, C{prepare} runs in the thread of the
        write, before the transaction: meanwhile another connection (another
        process) can take the write lock and commit.
        """
        from twisted.internet import reactor
        from twisted.internet.interfaces import IReactorFromThreads
        from twisted.internet.threads import deferToThreadPool
        from twisted.python.threadpool import ThreadPool

        pool = ThreadPool(minthreads=1, maxthreads=1)
        pool.start()
        self.addCleanup(pool.stop)
        db = self.make_database()
        self.files_dir = os.path.join(os.path.dirname(db), "+files")
        # the global reactor provides IReactorFromThreads, which its declared type leaves out
        threads = cast(IReactorFromThreads, reactor)
        store = SQLiteStore(db, self.files_dir, write_runner=lambda fn: deferToThreadPool(threads, pool, fn))
        self.addCleanup(store.close)
        seen: dict[str, int] = {}

        def prepare() -> None:
            seen["prepare"] = threading.get_ident()
            other = sqlite3.connect(db, timeout=0)
            try:
                other.execute("BEGIN IMMEDIATE")  # fails with "database is locked" if the write had begun
                other.execute("ROLLBACK")
            finally:
                other.close()

        def change(tx: ITransaction) -> None:
            seen["write"] = threading.get_ident()
            tx.set("k", 1)

        self.assertEqual(await store.write(change, prepare), (None, 1))
        self.assertEqual(seen["prepare"], seen["write"])
        self.assertNotEqual(seen["write"], threading.get_ident())

    def test_file_path(self) -> None:
        """
        C{file_path} names a relpath below C{files_dir}.
        """
        store = self.make_store()
        self.assertEqual(store.file_path("a/b/c.whl"), os.path.join(self.files_dir, "a/b/c.whl"))

    async def test_poll(self) -> None:
        """
        A second store on the same file notices commits made through the
        first when it polls: its serial advances and its subscribers hear
        of every new serial once.
        """
        first = self.make_store()
        db = first._path
        second = self.open(db)
        heard: list[tuple[int, dict[str, Any]]] = []
        second.subscribe(lambda serial, changes: heard.append((serial, changes)))

        await first.write(lambda tx: tx.set("a", 1))
        await first.write(lambda tx: tx.delete("a"))
        self.assertEqual(second.current_serial(), 0)
        self.assertEqual(heard, [])
        self.assertEqual(await second.read(serial_and("a")), (2, None))

        self.assertEqual(await second.poll(), 2)
        self.assertEqual(second.current_serial(), 2)
        self.assertEqual(heard, [(1, {"a": 1}), (2, {"a": None})])
        self.assertEqual(await second.poll(), 2)
        self.assertEqual(len(heard), 2)

    def test_polls_share_one_query(self) -> None:
        """
        Callers that poll while a poll runs share it when it brings the
        serial the beacon showed them; one that saw a newer serial gets a
        second poll, which starts when the first ends.  A beacon ahead of
        the database (nothing to find) does not make polls repeat.
        """
        first = self.make_store()
        beacon = SerialBeacon(os.path.join(os.path.dirname(first._path), ".serial"))
        self.addCleanup(beacon.close)
        pending: list[tuple[Deferred[Any], Any]] = []

        def held(fn: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append((d, fn))
            return d

        second = SQLiteStore(first._path, self.files_dir, read_runner=held, beacon=beacon)
        self.addCleanup(second.close)
        heard: list[int] = []
        second.subscribe(lambda serial, changes: heard.append(serial))

        self.successResultOf(first.write(lambda tx: tx.set("a", 1)))
        beacon.update(1)
        early, same = second.poll(), second.poll()
        (job,) = pending
        found = job[1]()  # the query sees serial 1
        self.successResultOf(first.write(lambda tx: tx.set("a", 2)))
        beacon.update(2)
        newer = second.poll()
        self.assertEqual(len(pending), 1)
        pending.pop()[0].callback(found)
        self.assertEqual((self.successResultOf(early), self.successResultOf(same)), (1, 1))
        self.assertNoResult(newer)
        (job,) = pending
        pending.pop()[0].callback(job[1]())
        self.assertEqual(self.successResultOf(newer), 2)
        self.assertEqual(heard, [1, 2])

        beacon.update(99)
        ahead = second.poll()
        (job,) = pending
        pending.pop()[0].callback(job[1]())
        self.assertEqual(self.successResultOf(ahead), 2)
        self.assertEqual(pending, [])

    async def test_shared_serials(self) -> None:
        """
        Writes through two stores on one file form one serial sequence.
        """
        first = self.make_store()
        second = self.open(first._path)
        self.assertEqual(await first.write(lambda tx: tx.set("a", 1)), (None, 1))
        self.assertEqual(await second.write(copying("a", "b")), (None, 2))
        self.assertEqual(await first.write(copying("b", "c")), (None, 3))
        self.assertEqual(
            [e.serial for e in await first.changelog(0, 10)],
            [e.serial for e in await second.changelog(0, 10)],
        )
        self.assertEqual(await second.read(lambda tx: tx.get("c")), 1)

    async def test_poll_after_own_write(self) -> None:
        """
        A store that writes before it has polled still lets its subscribers
        hear of the other store's earlier commit: they see every serial,
        in order, once the store polls.
        """
        first = self.make_store()
        second = self.open(first._path)
        heard: list[int] = []
        second.subscribe(lambda serial, changes: heard.append(serial))

        await first.write(lambda tx: tx.set("u/alice", {"pwhash": "new"}))
        self.assertEqual(await second.write(lambda tx: tx.set("b", 2)), (None, 2))
        await second.poll()
        self.assertEqual(heard, [1, 2])

    async def test_reopen(self) -> None:
        """
        A store opened again on the file continues from its serial and data.
        """
        store = self.make_store()
        await store.write(lambda tx: tx.set("a", 1))
        store.close()
        again = self.open(store._path)
        self.assertEqual(again.current_serial(), 1)
        self.assertEqual(await again.read(lambda tx: tx.get("a")), 1)
        self.assertEqual(await again.write(lambda tx: tx.set("a", 2)), (None, 2))

    def test_init_database_once(self) -> None:
        """
        Initialising an initialised database again changes nothing and
        C{migrate} reports the current schema version.
        """
        db = self.make_database()
        init_database(db, lambda tx: tx.set("u/root", {"username": "other"}))
        self.assertEqual(migrate(db), SCHEMA_VERSION)
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute("SELECT serial FROM changelog").fetchall()
            value = conn.execute("SELECT value FROM kv WHERE key = 'u/root'").fetchone()
        finally:
            conn.close()
        self.assertEqual(rows, [(0,)])
        self.assertIn('"username":"root"', value[0])

    def test_newer_schema(self) -> None:
        """
        A database whose C{user_version} is newer than L{SCHEMA_VERSION} is
        refused by C{migrate} and by L{SQLiteStore} with L{StorageError}.
        """
        db = self.make_database()
        conn = sqlite3.connect(db)
        try:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        finally:
            conn.close()
        error = self.assertRaises(StorageError, migrate, db)
        self.assertIn(str(SCHEMA_VERSION + 1), str(error))
        self.files_dir = self.mktemp()
        self.assertRaises(StorageError, SQLiteStore, db, self.files_dir)

    def test_uninitialised(self) -> None:
        """
        L{SQLiteStore} refuses a file that was never initialised (empty or
        missing) with L{StorageError}.
        """
        self.files_dir = self.mktemp()
        directory = self.mktemp()
        os.makedirs(directory)
        self.assertRaises(StorageError, SQLiteStore, os.path.join(directory, "new.sqlite"), "x")
        empty = os.path.join(directory, "empty.sqlite")
        open(empty, "wb").close()
        self.assertRaises(StorageError, SQLiteStore, empty, "x")

    def test_migrate_fresh(self) -> None:
        """
        C{migrate} on a new file creates the schema at L{SCHEMA_VERSION}; a
        store can open it (empty: serial -1) but C{init_database} gives
        serial 0.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        db = os.path.join(directory, "db.sqlite")
        self.assertEqual(migrate(db), SCHEMA_VERSION)
        self.files_dir = self.mktemp()
        store = self.open(db)
        self.assertEqual(store.current_serial(), -1)
        store.close()
        init_database(db, initial)
        self.assertEqual(self.open(db).current_serial(), 0)
