# -*- test-case-name: tests.service.test_server -*-
"""
The service tree of a serving process: its foundation (thread pools and
store) outlives every service that uses it.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from devpi_tx.service.server import Foundation
from devpi_tx.store.memory import MemoryStore


class _Flushes(Service):
    """At stop, queues work in the pool and waits for it, as the event processor does."""

    def __init__(self, pool: ThreadPool, done: list[str]) -> None:
        self._pool = pool
        self._done = done

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return deferToThreadPool(cast(IReactorFromThreads, reactor), self._pool, self._done.append, "flushed")


class _ClosingStore(MemoryStore):
    """Records whether the pools still ran when it was closed."""

    def __init__(self, files_dir: str, pool: ThreadPool) -> None:
        super().__init__(files_dir)
        self._pool = pool
        self.closed_while_pools_ran: list[bool] = []

    def close(self) -> None:
        self.closed_while_pools_ran.append(self._pool.started)


class FoundationTests(TestCase):
    async def test_pools_outlive_the_services(self) -> None:
        """
        Work a service queues in a pool while it stops still runs: the pools
        stop after every service has, and the store closes in between.
        """
        pool = ThreadPool(minthreads=1, maxthreads=1, name="test")
        top = Foundation([pool])
        store = _ClosingStore(self.mktemp(), pool)
        top.store = store
        done: list[str] = []
        _Flushes(pool, done).setServiceParent(top)
        top.startService()
        self.assertTrue(pool.started)
        stopped = top.stopService()
        stopped.addTimeout(10, reactor)  # a pool stopped first would drop the work: no answer at all
        await stopped
        self.assertEqual(done, ["flushed"])
        self.assertEqual(store.closed_while_pools_ran, [True])
        self.assertFalse(pool.started)
