"""
The event processor over a real SQLite store: order, resumption, failures,
commits of other processes.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.events.processor import EventProcessor, read_event_serial
from devpi_tx.service.serverdir import ServerDir
from devpi_tx.store.beacon import SerialBeacon
from devpi_tx.store.sqlite import SQLiteStore, inline_runner


class Recorder:
    """A hook that remembers what it saw; fails on request."""

    name = "recorder"

    def __init__(self, fail_at: int | None = None) -> None:
        self.seen: list[tuple[int, list[str]]] = []
        self.fail_at = fail_at

    def __call__(self, serial: int, changes: dict[str, Any]) -> None:
        if serial == self.fail_at:
            raise RuntimeError("hook failure")
        self.seen.append((serial, sorted(changes)))


def run(fn: Any, *args: Any) -> Any:
    return inline_runner(lambda: fn(*args))


class EventProcessorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.serverdir = ServerDir(self.mktemp())
        self.serverdir.initialise()
        self.beacon = SerialBeacon(os.path.join(self.serverdir.path, ".serial"))
        self.addCleanup(self.beacon.close)
        self.store = self.open_store()
        self.clock = Clock()

    def open_store(self) -> SQLiteStore:
        store = SQLiteStore(self.serverdir.database, self.serverdir.files, beacon=self.beacon)
        self.addCleanup(store.close)
        return store

    def write(self, store: SQLiteStore, key: str, value: Any) -> int:
        _, serial = self.successResultOf(store.write(lambda tx: tx.set(key, value)))
        return serial

    def processor(self, hook: Recorder) -> EventProcessor:
        events = EventProcessor(self.store, self.serverdir.path, [hook], self.clock, run)
        events.startService()
        self.addCleanup(events.stopService)
        return events

    def test_every_serial_in_order(self) -> None:
        """Hooks see serial 0 and every later commit once, in order, with the changed keys."""
        hook = Recorder()
        events = self.processor(hook)
        self.write(self.store, "u/a", {"x": 1})
        self.write(self.store, "u/b", {"x": 2})
        self.assertEqual([s for s, _ in hook.seen], [0, 1, 2])
        self.assertEqual(hook.seen[1], (1, ["u/a"]))
        self.assertEqual(events.event_serial, 2)
        self.assertEqual(read_event_serial(self.serverdir.path)[0], 2)
        self.assertIsNotNone(events.in_sync_at)

    def test_resume_after_restart(self) -> None:
        """A new processor starts after the stored event serial: nothing repeated or skipped."""
        first = Recorder()
        events = self.processor(first)
        self.write(self.store, "u/a", {"x": 1})
        events.stopService()
        self.write(self.store, "u/b", {"x": 2})
        self.write(self.store, "u/c", {"x": 3})
        second = Recorder()
        self.processor(second)
        self.assertEqual([s for s, _ in first.seen], [0, 1])
        self.assertEqual([s for s, _ in second.seen], [2, 3])

    def test_failure_does_not_stop(self) -> None:
        """A failing hook is logged and the next serials are still processed."""
        hook = Recorder(fail_at=1)
        events = self.processor(hook)
        self.write(self.store, "u/a", {"x": 1})
        self.write(self.store, "u/b", {"x": 2})
        self.assertEqual([s for s, _ in hook.seen], [0, 2])
        self.assertEqual(events.failures, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop_closes_hooks_after_the_serial_in_flight(self) -> None:
        """
        stopService waits for the serial being processed (it is saved), then
        calls the hooks' close(); nothing later is processed.
        """
        calls: list[str] = []

        class Closing(Recorder):
            def close(self) -> None:
                calls.append("close")

        pending: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

        def held(fn: Any, *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append((d, fn, args))
            return d

        hook = Closing()
        events = EventProcessor(self.store, self.serverdir.path, [hook], self.clock, held)
        events.startService()
        (first, fn, args) = pending.pop()  # serial 0, in its thread
        stopped = events.stopService()
        self.assertNoResult(stopped)
        self.assertEqual(calls, [])
        first.callback(fn(*args))
        self.successResultOf(stopped)
        self.assertEqual(calls, ["close"])
        self.assertEqual([s for s, _ in hook.seen], [0])
        self.assertEqual(read_event_serial(self.serverdir.path)[0], 0)
        self.write(self.store, "u/a", {"x": 1})
        self.assertEqual(pending, [])

    def test_commits_of_other_processes(self) -> None:
        """Commits made through another store on the same dir reach the hooks at the next poll."""
        hook = Recorder()
        self.processor(hook)
        other = self.open_store()
        self.write(other, "u/z", {"x": 1})
        self.assertTrue(self.store.behind())
        self.clock.advance(0.5)
        self.assertEqual(hook.seen[-1], (1, ["u/z"]))
        self.assertFalse(self.store.behind())
