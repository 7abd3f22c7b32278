"""
Wheels whose METADATA inflates far beyond its compressed size: read with a
bound, refused at upload, never inflated to serve C{.metadata}, and normal
metadata extracted once (spec 1.13, 4.1).
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.domain import releases
from devpi_tx.model.policy import Identity, Policy
from devpi_tx.store.files import (
    METADATA_LIMIT,
    MetadataTooLarge,
    prepare_bytes,
    read_limited,
    read_wheel_metadata,
    wheel_metadata,
)
from devpi_tx.store.interfaces import ITransaction
from devpi_tx.web.api import PARSE_IN_WRITER
from devpi_tx.web.files import WheelMetadataCache
from tests.helpers import make_wheel, make_zipbomb_wheel
from tests.web.test_api import _Base

BOMB_SIZE = 64 * 1024 * 1024


def _write(testcase: SynchronousTestCase, data: bytes) -> str:
    path: str = testcase.mktemp()
    with open(path, "wb") as f:
        f.write(data)
    return path


def _metadata_member(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name)


class _CountingReader:
    """A file object that counts the bytes read through it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.count += len(data)
        return bytes(data)


class _QueuedRunner:
    """Runs the functions given to it only when told to (a worker pool held back)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

    def __call__(self, fn: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((d, fn, args))
        return d

    def run_all(self) -> None:
        while self.calls:
            d, fn, args = self.calls.pop(0)
            try:
                result = fn(*args)
            except Exception:
                d.errback()
            else:
                d.callback(result)


class ReaderTests(SynchronousTestCase):
    def test_bomb_is_refused(self) -> None:
        """METADATA over L{METADATA_LIMIT} is refused by the reader, and is no metadata to the lenient one."""
        path = _write(self, make_zipbomb_wheel("bomb", "1.0", BOMB_SIZE)[1])
        with self.assertRaises(MetadataTooLarge) as caught:
            read_wheel_metadata(path)
        self.assertEqual(caught.exception.limit, METADATA_LIMIT)
        self.assertIsNone(wheel_metadata(path))

    def test_member_read_is_bounded(self) -> None:
        """
        Whatever a member declares, at most C{limit + 1} inflated bytes are
        taken from it before it is refused.
        """
        data = make_zipbomb_wheel("bomb", "1.0", BOMB_SIZE)[1]
        with zipfile.ZipFile(io.BytesIO(data)) as zf, zf.open("bomb-1.0.dist-info/METADATA") as member:
            counting = _CountingReader(member)
            with self.assertRaises(MetadataTooLarge):
                read_limited(counting, METADATA_LIMIT)  # type: ignore[arg-type]
        self.assertEqual(counting.count, METADATA_LIMIT + 1)

    def test_limit_is_inclusive(self) -> None:
        """Metadata of exactly C{limit} bytes is read whole; one byte more is refused."""
        path = _write(self, make_zipbomb_wheel("edge", "1.0", 1000)[1])
        self.assertEqual(read_wheel_metadata(path, limit=1000), b"x" * 1000)
        self.assertRaises(MetadataTooLarge, read_wheel_metadata, path, 999)

    def test_not_a_wheel(self) -> None:
        """A file that is no zip, or a zip without one METADATA, has no metadata."""
        self.assertIsNone(read_wheel_metadata(_write(self, b"not a zip")))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("x/y.txt", "")
        self.assertIsNone(read_wheel_metadata(_write(self, buf.getvalue())))


class UploadTests(_Base):
    def test_bomb_upload_refused(self) -> None:
        """
        A wheel whose METADATA is over the limit is refused with 400 and a
        reason naming the limit, whichever way its body is parsed; nothing
        is committed or left on disk, not even a temporary file.
        """
        for padding in (0, PARSE_IN_WRITER):
            archive = make_zipbomb_wheel("bomb-pkg", "1.0", BOMB_SIZE, padding=padding)
            reply = self.assert_no_trace(self.h.upload, "alice/dev", "alice", "bomb-pkg", "1.0", archive)
            self.assertEqual(reply.code, 400, reply.phrase)
            self.assertIn(f"METADATA is larger than {METADATA_LIMIT} bytes".encode(), reply.phrase)
            self.assertEqual(self.h.stored_files(), [])
        self.assertEqual(self.h.request("GET", "/alice/dev/bomb-pkg").code, 404)

    def test_metadata_extracted_once(self) -> None:
        """
        A wheel's C{.metadata} is its METADATA member byte for byte; asking
        again (or for a copy of the same wheel on another index) does not
        open the wheel again.
        """
        name, data = make_wheel("hello-pkg", "1.0", requires=("six",))
        self.assertEqual(self.h.upload("alice/dev", "alice", "hello-pkg", "1.0", (name, data)).code, 200)
        links = self.h.request("GET", "/alice/dev/hello-pkg/1.0").json()["result"]["+links"]
        path = "/" + links[0]["href"].split("/", 3)[3] + ".metadata"
        first = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(first.code, 200, first.body)
        self.assertEqual(first.body, _metadata_member(data))
        second = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(second.body, first.body)
        self.assertEqual(self.h.api.metadata_cache.extractions, 1)

        self.assertEqual(self.h.request("PUT", "/alice/prod", {"bases": ""}, user="alice").code, 200)
        body = {"name": "hello-pkg", "version": "1.0", "targetindex": "alice/prod"}
        self.assertEqual(self.h.request("PUSH", "/alice/dev", body, user="alice").code, 200)
        pushed = self.h.request("GET", path.replace("/alice/dev/", "/alice/prod/"), headers={"Accept": "*/*"})
        self.assertEqual(pushed.body, first.body)
        self.assertEqual(self.h.api.metadata_cache.extractions, 1)

    def test_stored_bomb_metadata_not_served(self) -> None:
        """
        A wheel stored before the limit (an older server recorded its
        metadata hash) answers C{.metadata} with a JSON 404 naming the
        limit, without inflating it, and is not read again on the next ask.
        """
        name, data = make_zipbomb_wheel("bomb-pkg", "1.0", BOMB_SIZE)
        prepared = prepare_bytes(self.h.serverdir.files, data)
        upload = releases.Upload(name, prepared, core_metadata_sha256="0" * 64)
        metadata = {"name": "bomb-pkg", "version": "1.0"}

        async def store(tx: ITransaction) -> str:
            return (
                await releases.store_release(tx, "alice/dev", metadata, upload, Identity("alice"), Policy())
            ).relpath

        relpath, _ = self.successResultOf(self.h.store.write(store))
        for accept in ("*/*", "application/json", "*/*"):
            reply = self.h.request("GET", f"/{relpath}.metadata", headers={"Accept": accept})
            self.assertEqual(reply.code, 404)
            self.assertEqual(reply.header("Content-Type"), "application/json")
            self.assertEqual(
                reply.json(),
                {"message": f"metadata of {relpath} is larger than {METADATA_LIMIT} bytes, it is not served"},
            )
        self.assertEqual(self.h.api.metadata_cache.extractions, 1)
        self.assertEqual(self.h.request("GET", f"/{relpath}", headers={"Accept": "*/*"}).body, data)


class CacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.runner = _QueuedRunner()
        self.cache = WheelMetadataCache(self.runner)
        _name, data = make_wheel("hello-pkg", "1.0")
        self.wheel = _write(self, data)
        self.expected = _metadata_member(data)

    def _get(self, key: str, path: str) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.cache.get(key, path))

    def test_concurrent_requests_share_one_extraction(self) -> None:
        """Requests for a wheel being extracted wait for that one extraction."""
        waiting = [self._get("sha256=a", self.wheel) for _ in range(4)]
        self.assertEqual(len(self.runner.calls), 1)
        self.runner.run_all()
        self.assertEqual([self.successResultOf(d) for d in waiting], [self.expected] * 4)
        self.assertEqual(self.successResultOf(self._get("sha256=a", self.wheel)), self.expected)
        self.assertEqual(self.runner.calls, [])
        self.assertEqual(self.cache.extractions, 1)

    def test_cancelled_request_does_not_stop_extraction(self) -> None:
        """A request that goes away leaves the shared extraction to the others."""
        gone = self._get("sha256=a", self.wheel)
        staying = self._get("sha256=a", self.wheel)
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        self.runner.run_all()
        self.assertEqual(self.successResultOf(staying), self.expected)

    def test_over_limit_is_kept(self) -> None:
        """Metadata over the limit is refused to every waiter and on later asks, read once."""
        bomb = _write(self, make_zipbomb_wheel("bomb", "1.0", BOMB_SIZE)[1])
        waiting = [self._get("sha256=b", bomb) for _ in range(2)]
        self.runner.run_all()
        for d in [*waiting, self._get("sha256=b", bomb)]:
            self.failureResultOf(d, MetadataTooLarge)
        self.assertEqual(self.cache.extractions, 1)

    def test_read_error_is_not_kept(self) -> None:
        """A wheel that cannot be read fails its waiters and is tried again later."""
        missing = os.path.join(self.mktemp(), "gone.whl")
        waiting = [self._get("sha256=c", missing) for _ in range(2)]
        self.runner.run_all()
        for d in waiting:
            self.failureResultOf(d, OSError)
        again = self._get("sha256=c", missing)
        self.runner.run_all()
        self.failureResultOf(again, OSError)
        self.assertEqual(self.cache.extractions, 2)

    def test_bounded_by_bytes(self) -> None:
        """Past C{max_bytes} the least recently used metadata goes first."""
        self.cache = WheelMetadataCache(self.runner, max_bytes=3 * (len(self.expected) + 200))
        for key in ("1", "2", "3", "1", "4"):
            d = self._get(key, self.wheel)
            self.runner.run_all()
            self.assertEqual(self.successResultOf(d), self.expected)
        self.assertLessEqual(self.cache.size, 3 * (len(self.expected) + 200))
        self.assertEqual(self.cache.extractions, 4)
        d = self._get("2", self.wheel)  # the least recently used: dropped
        self.runner.run_all()
        self.successResultOf(d)
        self.assertEqual(self.cache.extractions, 5)
        self.successResultOf(self._get("1", self.wheel))
        self.assertEqual(self.cache.extractions, 5)
