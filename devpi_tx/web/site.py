# -*- test-case-name: tests.web.test_metrics,tests.service.test_options -*-
"""
The Site: headers every answer carries (spec 0.3), a request body limit, and
one log line per request.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import IResource, Resource

from devpi_tx import DEVPI_SERVER_VERSION
from devpi_tx.store.beacon import group_hash
from devpi_tx.store.interfaces import IStore
from devpi_tx.web.api import IndexAPI
from devpi_tx.web.metrics import Metrics


class DevpiResource(Resource):
    """Wraps the Klein resource and adds devpi's headers."""

    isLeaf = True
    _log = Logger()

    def __init__(self, api: IndexAPI, store: IStore, uuid: str) -> None:
        super().__init__()
        self._api = api
        self._inner: IResource = api.app.resource()
        self._store = store
        self._headers = [
            (b"X-Devpi-Api-Version", b"2"),
            (b"X-Devpi-Server-Version", DEVPI_SERVER_VERSION.encode()),
            (b"X-Devpi-Uuid", uuid.encode()),
            (b"X-Devpi-Primary-Uuid", uuid.encode()),
            (b"X-Devpi-Master-Uuid", uuid.encode()),
        ]

    def render(self, request: Any) -> Any:
        for name, value in self._headers:
            request.setHeader(name, value)
        if self._store.behind():
            early = self._unaffected_page(request)
            if early is not None:
                return early
            # another process committed: see its changes before answering
            d = self._store.poll()
            d.addBoth(lambda _: self._render_now(request, later=True))
            return server.NOT_DONE_YET
        return self._render_now(request)

    def _unaffected_page(self, request: Any) -> bytes | None:
        """
        A cached simple page that none of the commits this process has not
        seen yet touched (the beacon says which groups they touched) is
        answered at once: it is the page as of the newest serial.  A poll
        catches up meanwhile.
        """
        group = self._api.page_group(request)
        if group is None:
            return None
        newest, touched = self._store.missed()
        if touched is None or group_hash(group) in touched:
            return None
        body = self._api.cached_page(request, group)
        if body is None:
            return None
        request.setHeader(b"X-Devpi-Serial", str(newest).encode())
        self._store.poll().addErrback(self._poll_failed)
        return body

    def _poll_failed(self, failure: Any) -> None:
        self._log.failure("catching up with other processes' commits failed", failure)

    def _render_now(self, request: Any, later: bool = False) -> Any:
        request.setHeader(b"X-Devpi-Serial", str(self._store.current_serial()).encode())
        result = self._api.cached_page(request)
        if result is None:
            result = self._api.cached_file(request)
        if result is None:
            result = self._inner.render(request)
        if later and result is not server.NOT_DONE_YET and not getattr(request, "_disconnected", False):
            request.write(result)
            request.finish()
        return result


class LimitedRequest(server.Request):
    """
    A request that refuses bodies over the site's C{max_body} with 413 as
    soon as the length is known, and does not parse forms (uploads are
    parsed as a stream later).
    """

    _log = Logger()
    _too_large = False
    _received = 0

    def __init__(self, channel: Any, queued: Any = None) -> None:
        super().__init__(channel, parsePOSTFormSubmission=False)
        self._started = time.monotonic()

    def _limit(self) -> int:
        return int(getattr(getattr(self.channel, "site", None), "max_body", 1 << 30))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        self._too_large = True
        body = b'{\n  "message": "request body too large"\n}\n'
        transport = self.channel.transport
        if transport is None:  # the connection is gone already
            return
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Connection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._too_large:
            return
        super().requestReceived(command, path, version)


class DevpiSite(server.Site):
    requestFactory = LimitedRequest  # type: ignore[assignment]  # Site declares http.Request's constructor
    _log = Logger()

    def __init__(
        self, resource: IResource, max_body: int, log_requests: bool = True, metrics: Metrics | None = None
    ) -> None:
        super().__init__(resource)
        self.max_body = max_body
        self._log_requests = log_requests
        self.metrics = metrics or Metrics()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        make_connection = channel.makeConnection

        def no_delay(transport: Any) -> None:
            # a response's last small write (a chunked body's end) must not wait for the peer's delayed ACK
            set_no_delay = getattr(transport, "setTcpNoDelay", None)
            if set_no_delay is not None:
                set_no_delay(True)
            make_connection(transport)

        channel.makeConnection = no_delay
        return channel

    def log(self, request: Any) -> None:
        elapsed = time.monotonic() - getattr(request, "_started", time.monotonic())
        # an answer cut off after its status line (a failed mirror download) is not a 200
        code = "aborted" if getattr(request, "devpi_aborted", False) else request.code
        self.metrics.observe(request.method, request.path, code, elapsed)
        if not self._log_requests:
            return
        method = request.method.decode("latin-1")
        path = request.uri.decode("latin-1")
        ms = elapsed * 1000
        # logging was about a quarter of a cached page's CPU; one pre-formatted field formats faster than five
        self._log.info(
            "{request_line}",
            request_line=f"{method} {path} {code} {request.sentLength} {ms:.1f}ms",
            method=method,
            path=path,
            code=code,
            size=request.sentLength,
            ms=ms,
        )
