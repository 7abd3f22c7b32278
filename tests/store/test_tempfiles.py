# -*- test-case-name: tests.store.test_tempfiles -*-
"""
Temporary files of writes: each names its writer (pid and start time), and
whatever no live write owns is removed at start and by a periodic sweep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.service.server import SWEEP_INTERVAL, TempSweep
from devpi_tx.store.files import STALE_TEMP_AGE, remove_stale_temp_files, temp_dir, temp_name


def _touch(path: str, age: float = 0.0) -> str:
    with open(path, "wb") as f:
        f.write(b"partial upload")
    if age:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    return path


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class RemoveStaleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = self.mktemp()
        self.tmp = temp_dir(self.files)

    def test_owned_by_a_live_write_kept(self) -> None:
        """A file of this running process stays."""
        mine = _touch(temp_name(self.files))
        self.assertEqual(remove_stale_temp_files(self.files), [])
        self.assertTrue(os.path.exists(mine))

    def test_dead_writer(self) -> None:
        """A file whose writer has ended goes."""
        name = f"{'a' * 32}-{_dead_pid()}.12345-tmp"
        _touch(os.path.join(self.tmp, name))
        self.assertEqual(remove_stale_temp_files(self.files), [name])

    def test_reused_pid(self) -> None:
        """
        A file whose pid is now another live process (this one, started at
        another time) goes: the pid alone does not make it a live write.
        """
        name = f"{'b' * 32}-{os.getpid()}.1-tmp"
        _touch(os.path.join(self.tmp, name))
        self.assertEqual(remove_stale_temp_files(self.files), [name])

    def test_other_names(self) -> None:
        """Names of the old form (pid only) or of no known form go."""
        names = sorted([f"{'c' * 32}-{os.getpid()}-tmp", "junk", "x-y-z-tmp"])
        for name in names:
            _touch(os.path.join(self.tmp, name))
        self.assertEqual(sorted(remove_stale_temp_files(self.files)), names)

    def test_abandoned_by_a_live_writer(self) -> None:
        """With C{max_age}, a file of a live process that nobody changed for that long goes."""
        old = _touch(temp_name(self.files), age=STALE_TEMP_AGE + 60)
        fresh = _touch(temp_name(self.files))
        removed = remove_stale_temp_files(self.files, max_age=STALE_TEMP_AGE)
        self.assertEqual(removed, [os.path.basename(old)])
        self.assertTrue(os.path.exists(fresh))

    def test_start_removes_what_a_killed_upload_left(self) -> None:
        """
        A server dir opened again (the tree's start) loses the temp files of
        the processes before it, even where a pid has been reused since.
        """
        from devpi_tx.service.serverdir import ServerDir

        serverdir = ServerDir(self.mktemp())
        serverdir.initialise()
        tmp = temp_dir(serverdir.files)
        left = [_touch(os.path.join(tmp, f"{'d' * 32}-{pid}-tmp")) for pid in (os.getpid(), _dead_pid())]
        left.append(_touch(os.path.join(tmp, f"{'e' * 32}-{os.getpid()}.2-tmp")))
        serverdir.open()
        self.assertEqual([p for p in left if os.path.exists(p)], [])


class SweepTests(SynchronousTestCase):
    def test_periodic(self) -> None:
        """The sweep runs every interval, in the given thread runner, and says what it removed."""
        files = self.mktemp()
        tmp = temp_dir(files)
        clock = Clock()
        calls: list[Any] = []

        def run(fn: Any, *args: Any) -> Deferred[Any]:
            calls.append(fn)
            return maybeDeferred(fn, *args)

        sweep = TempSweep(files, run, clock)
        sweep.startService()
        self.addCleanup(sweep.stopService)
        abandoned = _touch(temp_name(files), age=STALE_TEMP_AGE + 1)
        clock.advance(SWEEP_INTERVAL - 1)
        self.assertEqual(calls, [])
        self.assertTrue(os.path.exists(abandoned))
        with capturedLogs() as events:
            clock.advance(1)
        self.assertEqual(calls, [remove_stale_temp_files])
        self.assertFalse(os.path.exists(abandoned))
        self.assertIn(1, [e.get("count") for e in events])
        dead = _touch(os.path.join(tmp, f"{'f' * 32}-{_dead_pid()}.7-tmp"))
        clock.advance(SWEEP_INTERVAL)
        self.assertFalse(os.path.exists(dead))
