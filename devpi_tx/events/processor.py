# -*- test-case-name: tests.events.test_events -*-
"""
Event hooks: the main instance walks the changelog in serial order and hands
each entry to every hook, remembering the last processed serial in the
server dir so a restart resumes where it stopped (spec 10.2).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from devpi_tx.store.coalesce import Coalescer
from devpi_tx.store.interfaces import IStore

EVENT_SERIAL = ".event_serial"
BATCH = 100


class Hook(Protocol):
    """Runs in a worker thread for every committed serial, in order."""

    name: str

    def __call__(self, serial: int, changes: dict[str, Any]) -> None: ...

    # a hook may also have close(), called once the processor has stopped


def read_event_serial(serverdir: str) -> tuple[int, float | None]:
    """The last processed serial (-1 if none) and when it was written."""
    path = os.path.join(serverdir, EVENT_SERIAL)
    try:
        with open(path) as f:
            return int(f.read().strip() or -1), os.path.getmtime(path)
    except (OSError, ValueError):
        return -1, None


def write_event_serial(serverdir: str, serial: int) -> None:
    path = os.path.join(serverdir, EVENT_SERIAL)
    temp = path + ".tmp"
    with open(temp, "w") as f:
        f.write(str(serial))
    os.replace(temp, path)


class EventProcessor(Service):
    _log = Logger()

    def __init__(
        self,
        store: IStore,
        serverdir: str,
        hooks: list[Hook],
        reactor: Any,
        run_in_thread: Callable[..., Deferred[Any]],
        poll_interval: float = 0.5,
    ) -> None:
        self._store = store
        self._serverdir = serverdir
        self._hooks = hooks
        self._reactor = reactor
        self._run = run_in_thread
        self._poll_interval = poll_interval
        self._work = Coalescer()
        self._again = False
        self._poller: LoopingCall | None = None
        self.event_serial, _ = read_event_serial(serverdir)
        self.in_sync_at: float | None = None
        self.failures = 0

    def _heard(self, serial: int, changes: dict[str, Any]) -> None:
        self.kick()

    def startService(self) -> None:
        super().startService()
        self._store.subscribe(self._heard)
        self._poller = LoopingCall(self._poll)
        self._poller.clock = self._reactor
        self._poller.start(self._poll_interval, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        # the serial being processed finishes (and is saved) before hooks close
        running = self._work.run("events", self._process) if self._work.busy("events") else succeed(None)
        return running.addBoth(lambda _: self._close_hooks())

    def _close_hooks(self) -> None:
        for hook in self._hooks:
            close = getattr(hook, "close", None)
            if close is not None:
                close()

    def _poll(self) -> Deferred[Any] | None:
        """Commits by worker processes reach the main instance here."""
        if self._store.behind():
            return self._store.poll()
        self.kick()
        return None

    def _apply(self, serial: int, changes: dict[str, Any]) -> list[tuple[str, Failure]]:
        """In a worker thread: run the hooks on one serial, then save it; the hooks' failures."""
        failed = []
        for hook in self._hooks:
            try:
                hook(serial, changes)
            except Exception:
                failed.append((hook.name, Failure()))
        write_event_serial(self._serverdir, serial)
        return failed

    def kick(self) -> Deferred[None]:
        """Process everything up to the current serial (one run at a time)."""
        if not self.running:
            return succeed(None)
        if self._work.busy("events"):
            self._again = True
        return self._work.run("events", self._process)

    async def _process(self) -> None:
        while True:
            self._again = False
            while self.running and self.event_serial < self._store.current_serial():
                entries = await self._store.changelog(self.event_serial, BATCH)
                if not entries:
                    break
                for entry in entries:
                    # every hook and the saved serial in one thread call: one hand-off per serial
                    failed = await self._run(self._apply, entry.serial, entry.changes)
                    for name, failure in failed:
                        self.failures += 1
                        self._log.failure(
                            "Hook {hook} failed at serial {serial}", failure, hook=name, serial=entry.serial
                        )
                    self.event_serial = entry.serial
            if self.event_serial >= self._store.current_serial():
                self.in_sync_at = time.time()
            if not self._again:
                return
