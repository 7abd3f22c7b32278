"""
Streaming a stored file to a client with back-pressure: a push producer that
reads the next chunk only while the transport wants more.
"""

from __future__ import annotations

import mimetypes
import os
from typing import BinaryIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web.iweb import IRequest
from zope.interface import implementer

CHUNK = 64 * 1024
WHOLE = 1024 * 1024  # files up to this size are sent in one write


@implementer(IPushProducer)
class FileProducer:
    def __init__(self, source: BinaryIO, request: IRequest) -> None:
        self._source = source
        self._request = request
        self._paused = False
        self._done = False
        self.finished: Deferred[bytes] = Deferred()

    def start(self) -> Deferred[bytes]:
        self._request.registerProducer(self, True)
        self._produce()
        return self.finished

    def _produce(self) -> None:
        while not self._paused and not self._done:
            chunk = self._source.read(CHUNK)
            if not chunk:
                self._finish()
                return
            self._request.write(chunk)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._source.close()
        self._request.unregisterProducer()
        self.finished.callback(b"")

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._produce()

    def stopProducing(self) -> None:
        self._finish()


def content_type(filename: str) -> bytes:
    guessed, encoding = mimetypes.guess_type(filename)
    if encoding == "gzip":
        return b"application/x-tar" if ".tar" in filename else b"application/gzip"
    return (guessed or "application/octet-stream").encode()


async def send_file(request: IRequest, path: str, mime: bytes | None = None) -> bytes:
    """
    Answer C{request} with the file at C{path} (headers only for HEAD);
    returns what the Klein handler should return once the body went out.
    """
    source = open(path, "rb")
    size = os.fstat(source.fileno()).st_size
    request.setHeader(b"Content-Type", mime or content_type(os.path.basename(path)))
    request.setHeader(b"Content-Length", str(size).encode())
    if request.method == b"HEAD":
        source.close()
        return b""
    if size <= WHOLE:
        # most wheels: one write is cheaper than a producer's round trips
        with source:
            return source.read()
    return await FileProducer(source, request).start()
