"""
The file consistency check (devpi-fsck): stored files against their entries.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.admin.fsck import FATAL, fsck
from devpi_tx.domain import keys
from devpi_tx.store.interfaces import StorageError
from tests.helpers import APIHarness, make_sdist, make_wheel


class FsckTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = APIHarness(self)
        self.h.login("root", "")
        self.h.create_user("alice", "secret")
        self.assertEqual(self.h.request("PUT", "/alice/dev", {}, user="alice").code, 200)
        self.wheel = make_wheel("pkg", "1.0")
        self.sdist = make_sdist("pkg", "1.0")
        for archive in (self.wheel, self.sdist):
            self.assertEqual(self.h.upload("alice/dev", "alice", "pkg", "1.0", archive).code, 200)

    def path(self, archive: tuple[str, bytes]) -> str:
        sha = hashlib.sha256(archive[1]).hexdigest()
        return os.path.join(self.h.serverdir.files, f"alice/dev/+f/{sha[:3]}/{sha[3:16]}/{archive[0]}")

    def relpath(self, archive: tuple[str, bytes]) -> str:
        return os.path.relpath(self.path(archive), self.h.serverdir.files)

    def test_clean(self) -> None:
        """A consistent server passes with status 0."""
        report = fsck(self.h.serverdir.path)
        self.assertEqual(
            (report.ok, report.status, report.errors, report.warnings, report.checked), (True, 0, [], [], 2)
        )
        self.assertEqual(report.serial, self.h.store.current_serial())
        text = report.text()
        self.assertIn(f"INFO    serverdir: {self.h.serverdir.path}\n", text)
        self.assertIn("INFO    Finished with a total of 2 files.\n", text)
        self.assertNotIn(FATAL, text)

    def test_truncated(self) -> None:
        """A truncated file is an error, even without checksums."""
        with open(self.path(self.sdist), "r+b") as f:
            f.truncate(10)
        for checksum in (True, False):
            report = fsck(self.h.serverdir.path, checksum=checksum)
            self.assertEqual(report.status, 1)
            self.assertEqual(
                report.errors, [f"{self.relpath(self.sdist)} - size mismatch, expected {len(self.sdist[1])}, got 10"]
            )
            self.assertTrue(report.text().endswith(FATAL + "\n"))

    def test_corrupted(self) -> None:
        """Same size, other bytes: a checksum error, which only the checksum finds."""
        data = bytearray(self.sdist[1])
        data[-1] ^= 0xFF
        with open(self.path(self.sdist), "wb") as f:
            f.write(data)
        report = fsck(self.h.serverdir.path)
        (error,) = report.errors
        sha = hashlib.sha256(self.sdist[1]).hexdigest()
        self.assertEqual(
            error,
            f"{self.relpath(self.sdist)} - sha256 mismatch, expected {sha}, got {hashlib.sha256(data).hexdigest()}",
        )
        self.assertEqual(fsck(self.h.serverdir.path, checksum=False).status, 0)

    def test_missing(self) -> None:
        """A missing private file is an error, counted at the end."""
        os.unlink(self.path(self.wheel))
        report = fsck(self.h.serverdir.path)
        self.assertEqual((report.ok, report.status), (False, 1))
        self.assertEqual(report.errors, [f"Missing file {self.relpath(self.wheel)}", "A total of 1 files are missing."])
        self.assertIn(f"ERROR   Missing file {self.relpath(self.wheel)}\n", report.text())

    def test_wheel_metadata(self) -> None:
        """
        The PEP 658 metadata of a wheel is checked too: its file if there is
        one, else what the wheel holds (the file is derived and may be absent).
        """
        self.assertFalse(os.path.exists(self.path(self.wheel) + ".metadata"))
        self.assertEqual(fsck(self.h.serverdir.path).errors, [])
        with open(self.path(self.wheel) + ".metadata", "wb") as f:
            f.write(b"Name: other\n")
        (error,) = fsck(self.h.serverdir.path).errors
        self.assertIn("metadata sha256 mismatch", error)
        os.unlink(self.path(self.wheel) + ".metadata")

        async def wrong_hash(tx: Any) -> None:
            entry = await tx.get(keys.file(self.relpath(self.wheel)))
            tx.set(keys.file(self.relpath(self.wheel)), dict(entry, core_metadata={"sha256": "0" * 64}))

        self.successResultOf(self.h.store.write(wrong_hash))
        (error,) = fsck(self.h.serverdir.path).errors
        self.assertIn(f"{self.relpath(self.wheel)} - metadata sha256 mismatch, expected {'0' * 64}", error)

    def test_mirror_missing_is_warning(self) -> None:
        """A cached mirror file that is gone is only a warning; entries never downloaded are skipped."""
        entry = {
            "url": "https://files.example/m-1.0.tar.gz",
            "hashes": {"sha256": "a" * 64},
            "project": "m",
            "version": "1.0",
            "last_modified": "Sun, 22 Nov 2026 00:00:00 GMT",
        }

        def add(tx: Any) -> None:
            tx.set(keys.file("root/pypi/+f/aaa/aaaaaaaaaaaaa/m-1.0.tar.gz"), entry)
            tx.set(
                keys.file("root/pypi/+f/bbb/bbbbbbbbbbbbb/m-2.0.tar.gz"), {"url": "https://files.example/m-2.0.tar.gz"}
            )
            # a file without recorded hashes can only be checked for existence
            tx.set(keys.file("root/pypi/+e/files.example/m-3.0.tar.gz"), dict(entry, hashes={}))

        self.successResultOf(self.h.store.write(add))
        os.makedirs(os.path.join(self.h.serverdir.files, "root/pypi/+e/files.example"))
        open(os.path.join(self.h.serverdir.files, "root/pypi/+e/files.example/m-3.0.tar.gz"), "w").close()
        report = fsck(self.h.serverdir.path)
        self.assertEqual((report.status, report.checked, report.errors), (0, 4, []))
        self.assertEqual(
            report.warnings,
            ["Missing file root/pypi/+f/aaa/aaaaaaaaaaaaa/m-1.0.tar.gz", "A total of 1 files are missing in mirrors."],
        )
        self.assertIn("WARNING A total of 1 files are missing in mirrors.\n", report.text())

    def test_not_a_server(self) -> None:
        """A directory without server data is refused."""
        with self.assertRaises(StorageError):
            fsck(self.mktemp())
