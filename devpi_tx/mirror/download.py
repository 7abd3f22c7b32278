# -*- test-case-name: tests.mirror.test_mirror,tests.e2e.test_e2e_mirror -*-
"""
Mirror files fetched on first request: streamed to the client while written
aside and hashed, kept only when the hash matches, one upstream download per
file however many clients ask at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IRequest
from zope.interface import implementer

from devpi_tx.domain import keys
from devpi_tx.domain.releases import http_date
from devpi_tx.mirror.upstream import Upstream, UpstreamError
from devpi_tx.model.errors import NotFound, UpstreamFailed
from devpi_tx.store.coalesce import Coalescer
from devpi_tx.store.interfaces import IStore, ITransaction

STALL_TIMEOUT = 30.0
LOCK_POLL = 0.05


class _Discard(Protocol):
    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.done.callback(None)


@implementer(IPushProducer)
class _Tee(Protocol):
    """
    Receives an upstream body: to a temp file and the hashers, and to the
    client one chunk behind, so the last bytes go out only once the file
    is known to be good.  The client's back-pressure pauses upstream.
    """

    def __init__(self, request: IRequest | None, out: Any, algorithms: list[str], reactor: Any, stall: float) -> None:
        # the producer calls of twisted.web's Request, which IRequest does not declare
        self.request: Any = request
        self.out = out
        self.hashers = {a: hashlib.new(a) for a in algorithms}
        self.size = 0
        self.held = b""
        self.reactor = reactor
        self.stall = stall
        # fires with a one-item list: a Failure as a result would errback
        self.done: Deferred[list[Failure]] = Deferred()
        self._timer: Any = None
        self._client_timer: Any = None
        self._paused_by_client = False

    def connectionMade(self) -> None:
        self._timer = self.reactor.callLater(self.stall, self._stalled)
        if self.request is not None:
            self.request.registerProducer(self, True)
            self.request.notifyFinish().addErrback(lambda _: self.detach())

    def detach(self) -> None:
        """The client went away: keep downloading for the cache."""
        self.request = None
        if self._paused_by_client:
            self._paused_by_client = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def _stalled(self) -> None:
        self._timer = None
        self.transport.stopProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.stall)
        self.out.write(data)
        for hasher in self.hashers.values():
            hasher.update(data)
        self.size += len(data)
        if self.request is not None:
            if self.held:
                self.request.write(self.held)
            self.held = data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._client_timer is not None and self._client_timer.active():
            self._client_timer.cancel()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._timer is None and not reason.check(ResponseDone, PotentialDataLoss):
            reason = Failure(UpstreamError(f"download stalled for {self.stall:g} seconds"))
        self.done.callback([reason])

    # IPushProducer, for the client's transport
    def pauseProducing(self) -> None:
        self._paused_by_client = True
        self.transport.pauseProducing()  # type: ignore[union-attr]
        if self._client_timer is None:
            self._client_timer = self.reactor.callLater(self.stall, self._client_stalled)

    def resumeProducing(self) -> None:
        if self._client_timer is not None and self._client_timer.active():
            self._client_timer.cancel()
        self._client_timer = None
        if self._paused_by_client:
            self._paused_by_client = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def _client_stalled(self) -> None:
        """A client that stops reading must not hold the download for others."""
        self._client_timer = None
        request = self.request
        self.detach()
        if request is not None:
            _abort(request)

    def stopProducing(self) -> None:
        self.detach()


def _abort(request: IRequest) -> None:
    """Break the client's connection: the only way to tell it of a failure after its 200 went out."""
    request.devpi_aborted = True  # type: ignore[attr-defined]  # logged and counted as such, not as a 200
    transport = getattr(request.channel, "transport", None)  # type: ignore[attr-defined]
    if transport is not None:
        abort = getattr(transport, "abortConnection", None) or transport.loseConnection
        abort()


class _CrossProcessLock:
    """A non-blocking C{flock} on a per-file lock file, shared by the tree's processes."""

    def __init__(self, files_dir: str, relpath: str) -> None:
        directory = os.path.join(files_dir, ".locks")
        os.makedirs(directory, exist_ok=True)
        self._path = os.path.join(directory, hashlib.sha1(relpath.encode()).hexdigest())
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class MirrorFiles:
    _log = Logger()

    def __init__(
        self,
        store: IStore,
        upstream: Upstream,
        files_dir: str,
        reactor: Any,
        stall: float = STALL_TIMEOUT,
        run_in_thread: Callable[..., Deferred[Any]] = maybeDeferred,
    ) -> None:
        self._store = store
        self._run = run_in_thread
        self._upstream = upstream
        self._files_dir = files_dir
        self._reactor = reactor
        self._stall = stall
        self._downloads = Coalescer()
        self.downloads = 0

    async def fetch(self, request: IRequest, relpath: str, entry: dict[str, Any], mirror_url: str) -> bool:
        """
        Make the file cached, streaming it to C{request} when this request
        starts the download.  Returns C{True} when the body was sent,
        C{False} when the caller should now serve the file from disk.

        @raise DomainError: upstream failed before anything was sent.
        """
        if self._downloads.busy(relpath):
            await self._downloads.run(relpath, self._never)
            return False
        lock = _CrossProcessLock(self._files_dir, relpath)
        if not lock.acquire():
            # another process of the tree downloads it: wait, then serve from disk
            await self._downloads.run(relpath, lambda: self._await_other(lock, relpath))
            if await self._cached(relpath):
                return False
            lock = _CrossProcessLock(self._files_dir, relpath)
            while not lock.acquire():
                await deferLater(self._reactor, LOCK_POLL, lambda: None)
        # the client is answered once the body is verified; keeping the file goes on after that
        answered: Deferred[None] = Deferred()
        job = self._downloads.run(relpath, lambda: self._download(request, relpath, entry, mirror_url, answered))

        def settle(result: Any) -> None:
            lock.release()
            if not answered.called:
                if isinstance(result, Failure):
                    answered.errback(result)
                else:
                    answered.callback(None)
            elif isinstance(result, Failure):
                self._log.failure("keeping {relpath} in the cache", result, relpath=relpath)

        job.addBoth(settle)
        await answered
        return True

    async def _cached(self, relpath: str) -> bool:
        await self._store.poll()
        entry = await self._store.read(lambda tx: tx.get(keys.file(relpath)))
        return bool(entry and entry.get("last_modified") and self._store.files.exists(relpath))

    async def _await_other(self, lock: _CrossProcessLock, relpath: str) -> None:
        while not lock.acquire():
            await deferLater(self._reactor, LOCK_POLL, lambda: None)
        lock.release()

    async def _never(self) -> None:  # pragma: no cover - only runs when no download is under way
        raise AssertionError("no download under way")

    async def _download(
        self, request: IRequest, relpath: str, entry: dict[str, Any], mirror_url: str, answered: Deferred[None]
    ) -> None:
        url = entry["url"]
        try:
            response = await self._upstream.open(url, auth_source=mirror_url)
        except UpstreamError as e:
            raise UpstreamFailed(e.message) from None
        if response.code != 200:
            discard = _Discard()
            response.deliverBody(discard)
            await discard.done
            if response.code == 404:
                raise NotFound(f"error 404 getting {url}")
            raise UpstreamFailed(f"error {response.code} getting {url}")
        self.downloads += 1
        expected = {a: v.lower() for a, v in entry.get("hashes", {}).items() if a in hashlib.algorithms_available}
        algorithms = sorted(set(expected) | {"sha256"})
        length = response.length if isinstance(response.length, int) else None
        request.setResponseCode(200)
        ctype = response.headers.getRawHeaders(b"Content-Type", [b"application/octet-stream"])[0]
        request.setHeader(b"Content-Type", ctype)
        if length is not None:
            request.setHeader(b"Content-Length", str(length).encode())
        request.setHeader(b"X-Accel-Buffering", b"no")
        last_modified = response.headers.getRawHeaders(b"Last-Modified", [None])[0]
        temp = self._store.files.temp_path()
        out = open(temp, "wb")
        tee = _Tee(request, out, algorithms, self._reactor, self._stall)
        response.deliverBody(tee)
        (reason,) = await tee.done
        out.close()
        if tee.request is not None:
            tee.request.unregisterProducer()
        problem = None
        if not reason.check(ResponseDone, PotentialDataLoss):
            problem = f"download of {url} failed: {reason.getErrorMessage()}"
        elif length is not None and tee.size != length:
            problem = f"download of {url} ended after {tee.size} of {length} bytes"
        else:
            for algo, value in expected.items():
                got = tee.hashers[algo].hexdigest()
                if got != value:
                    problem = f"{algo} mismatch for {url}: expected {value}, got {got}"
        if problem is not None:
            os.unlink(temp)
            self._log.error("{problem}", problem=problem)
            if tee.request is not None and tee.request.startedWriting:
                # bytes went out already: only a broken connection tells the client
                _abort(tee.request)
            raise UpstreamError(problem)
        hashes = {a: h.hexdigest() for a, h in tee.hashers.items()}
        stamp = last_modified.decode("latin-1") if last_modified else http_date(self._reactor.seconds())

        if tee.request is not None and tee.held:
            tee.request.write(tee.held)
        tee.held = b""
        answered.callback(None)

        async def commit(tx: ITransaction) -> None:
            current = await tx.get(keys.file(relpath)) or dict(entry)
            current.update(hashes=hashes, size=tee.size, last_modified=stamp)
            current.setdefault("hash_spec", f"sha256={hashes['sha256']}")
            tx.set(keys.file(relpath), current)
            tx.place_file(temp, relpath)

        try:
            # on disk before the entry names it, without holding the write lock meanwhile
            await self._run(_fsync, temp)
        except BaseException:
            _unlink_quietly(temp)
            raise
        await self._store.write(commit)


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
