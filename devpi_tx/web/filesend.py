# -*- test-case-name: tests.web.test_api_packages,tests.e2e.test_e2e_server -*-
"""
Streaming a stored file to a client with back-pressure: a push producer that
reads the next chunk only while the transport wants more.  Single byte ranges
(RFC 9110 section 14) are served as 206, so that installers can read a
wheel's metadata from its end without downloading all of it.
"""

from __future__ import annotations

import mimetypes
import os
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web.iweb import IRequest
from zope.interface import implementer

CHUNK = 64 * 1024
WHOLE = 1024 * 1024  # files up to this size are sent in one write


@implementer(IPushProducer)
class FileProducer:
    def __init__(self, source: BinaryIO, request: IRequest, length: int | None = None) -> None:
        self._source = source
        # the producer calls of twisted.web's Request, which IRequest does not declare
        self._request: Any = request
        self._left = length
        self._paused = False
        self._done = False
        self.finished: Deferred[bytes] = Deferred()

    def start(self) -> Deferred[bytes]:
        self._request.registerProducer(self, True)
        self._produce()
        return self.finished

    def _produce(self) -> None:
        while not self._paused and not self._done:
            want = CHUNK if self._left is None else min(CHUNK, self._left)
            chunk = self._source.read(want) if want else b""
            if not chunk:
                self._finish()
                return
            if self._left is not None:
                self._left -= len(chunk)
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


def byte_range(header: bytes | None, size: int) -> tuple[int, int] | None:
    """
    The single range C{(first, last)} that a C{Range} header asks for in a
    file of C{size} bytes; C{None} to answer with the whole file (no header,
    another unit, several ranges or a malformed one: a server may ignore
    those).

    @raise ValueError: the range is valid but lies outside the file (416).
    """
    if not header:
        return None
    unit, _, spec = header.decode("latin-1").partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        length = int(last)
        if length == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise ValueError("range starts after the end")
    return start, end


def span(wanted: tuple[int, int] | None, size: int) -> tuple[int, int]:
    """The C{(offset, length)} to send of a file of C{size} bytes for a L{byte_range} result."""
    return (0, size) if wanted is None else (wanted[0], wanted[1] - wanted[0] + 1)


def answer_range(request: IRequest, wanted: tuple[int, int] | None, size: int) -> tuple[int, int]:
    """Mark C{request} 206 with its Content-Range when C{wanted}; the L{span} to send."""
    if wanted is not None:
        request.setResponseCode(206)
        request.setHeader(b"Content-Range", f"bytes {wanted[0]}-{wanted[1]}/{size}".encode())
    return span(wanted, size)


async def send_file(request: IRequest, path: str, mime: bytes | None = None) -> bytes:
    """
    Answer C{request} with the file at C{path} (headers only for HEAD), or
    the byte range it asks for; returns what the Klein handler should
    return once the body went out.
    """
    source = open(path, "rb")
    size = os.fstat(source.fileno()).st_size
    request.setHeader(b"Content-Type", mime or content_type(os.path.basename(path)))
    request.setHeader(b"Accept-Ranges", b"bytes")
    wanted = None
    if_range = request.getHeader(b"If-Range")
    if if_range is None or if_range == request.responseHeaders.getRawHeaders(b"Last-Modified", [None])[0]:
        try:
            wanted = byte_range(request.getHeader(b"Range"), size)
        except ValueError:
            source.close()
            request.setResponseCode(416)
            request.setHeader(b"Content-Range", f"bytes */{size}".encode())
            request.setHeader(b"Content-Length", b"0")
            return b""
    start, length = answer_range(request, wanted, size)
    request.setHeader(b"Content-Length", str(length).encode())
    if request.method == b"HEAD":
        source.close()
        return b""
    source.seek(start)
    if length <= WHOLE:
        # most wheels: one write is cheaper than a producer's round trips
        with source:
            return source.read(length)
    return await FileProducer(source, request, length).start()
