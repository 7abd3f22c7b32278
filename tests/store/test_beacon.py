"""
The serial beacon shared by the processes of a server dir, and what it lets
a process answer before it has polled for other processes' commits.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.store.beacon import GROUPS_PER_SLOT, SLOTS, SerialBeacon, group_hash
from tests.helpers import APIHarness, make_wheel
from tests.web.test_api import SIMPLE_JSON


class BeaconTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, ".serial")

    def beacon(self) -> SerialBeacon:
        beacon = SerialBeacon(self.path)
        self.addCleanup(beacon.close)
        return beacon

    def test_groups_of_missed_commits(self) -> None:
        """
        Another process's beacon on the same file sees the newest serial and
        the union of the groups of the commits after a known serial.
        """
        mine, other = self.beacon(), self.beacon()
        self.assertEqual(other.read(), -1)
        mine.update(0, [])
        mine.update(1, ["alpha"])
        mine.update(2, ["beta", ""])
        self.assertEqual(other.read(), 2)
        self.assertEqual(other.touched(0, 2), {group_hash("alpha"), group_hash("beta"), group_hash("")})
        self.assertEqual(other.touched(1, 2), {group_hash("beta"), group_hash("")})
        self.assertEqual(other.touched(2, 2), frozenset())
        mine.update(1, ["late"])  # an older serial recorded late does not lower the newest
        self.assertEqual(other.read(), 2)

    def test_unknown_is_none(self) -> None:
        """
        C{None} when a missed commit touched everything (groups unknown or
        too many), when its place holds no record of it (never written, or
        reused by a later serial), or when more commits were missed than the
        ring holds.
        """
        beacon = self.beacon()
        beacon.update(1, ["a"])
        beacon.update(2, None)
        self.assertIsNone(beacon.touched(0, 2))
        self.assertEqual(beacon.touched(2, 2), frozenset())
        beacon.update(3, [f"g{i}" for i in range(GROUPS_PER_SLOT + 1)])
        self.assertIsNone(beacon.touched(2, 3))
        beacon.update(5, ["a"])  # serial 4 not (yet) recorded
        self.assertIsNone(beacon.touched(3, 5))
        beacon.update(4, ["b"])
        self.assertEqual(beacon.touched(3, 5), {group_hash("a"), group_hash("b")})
        beacon.update(4 + SLOTS, ["c"])  # takes serial 4's place
        self.assertIsNone(beacon.touched(3, 5))
        self.assertIsNone(beacon.touched(0, 1 + SLOTS))

    def test_older_file(self) -> None:
        """A beacon file of only the serial (8 bytes) keeps its serial; its commits count as unknown."""
        with open(self.path, "wb") as f:
            f.write((7).to_bytes(8, "little", signed=True))
        beacon = self.beacon()
        self.assertEqual(beacon.read(), 7)
        self.assertIsNone(beacon.touched(6, 7))
        beacon.update(8, ["x"])
        self.assertEqual(beacon.touched(7, 8), {group_hash("x")})


class UnaffectedPagesTests(SynchronousTestCase):
    """
    Two processes on one server dir: the second has not polled yet (its
    polls are held) when the first commits an upload.
    """

    def setUp(self) -> None:
        self.a = APIHarness(self)
        self.polls: list[tuple[Deferred[Any], Any]] = []

        def held(fn: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            self.polls.append((d, fn))
            return d

        self.a.create_user("alice")
        self.assertEqual(self.a.request("PUT", "/alice/dev", {}, user="alice").code, 200)
        for name in ("pkg-a", "pkg-b"):
            self.assertEqual(self.a.upload("alice/dev", "alice", name, "1.0", make_wheel(name, "1.0")).code, 200)
        self.b = APIHarness(self, serverdir=self.a.serverdir)
        # b reads inline while it warms its page cache, then holds its reads (polls)
        for name in ("pkg-a", "pkg-b"):
            self.assertEqual(self.get(name).code, 200)
        self.b.store._read_runner = held

    def get(self, name: str) -> Any:
        return self.b.request("GET", f"/alice/dev/+simple/{name}/", headers={"Accept": SIMPLE_JSON})

    def pending_get(self, name: str) -> Deferred[Any]:
        pending = self.b.treq.get(f"http://127.0.0.1:3141/alice/dev/+simple/{name}/", headers={"Accept": SIMPLE_JSON})
        self.b.flush(pending)
        return pending

    def run_polls(self) -> None:
        while self.polls:
            d, fn = self.polls.pop(0)
            d.callback(fn())
        self.b.flush()

    def test_untouched_page_answered_before_polling(self) -> None:
        """
        A cached page of a project the missed commit did not touch is
        answered at once, with the newest serial; the touched project's page
        waits for the poll and then shows the new file.
        """
        reply = self.a.upload("alice/dev", "alice", "pkg-a", "2.0", make_wheel("pkg-a", "2.0"))
        self.assertEqual(reply.code, 200)
        newest = self.a.store.current_serial()
        self.assertLess(self.b.store.current_serial(), newest)

        untouched = self.successResultOf(self.pending_get("pkg-b"))
        self.assertEqual(untouched.code, 200)
        self.assertEqual(untouched.headers.getRawHeaders("X-Devpi-Serial"), [str(newest)])
        self.assertEqual(len(self.polls), 1)  # catching up started

        touched = self.pending_get("pkg-a")
        self.assertNoResult(touched)
        self.run_polls()
        reply = self.successResultOf(touched)
        self.assertEqual(reply.code, 200)
        self.assertEqual(self.b.store.current_serial(), newest)
        reading = self.b.treq.json_content(reply)
        self.b.flush(reading)
        body = self.successResultOf(reading)
        self.assertEqual(body["versions"], ["1.0", "2.0"])

    def test_index_change_waits_for_everything(self) -> None:
        """After an index config change every page waits for the poll."""
        reply = self.a.request("PATCH", "/alice/dev", ["title=changed"], user="alice")
        self.assertEqual(reply.code, 200, reply.body)
        pending = self.pending_get("pkg-b")
        self.assertNoResult(pending)
        self.run_polls()
        self.assertEqual(self.successResultOf(pending).code, 200)
