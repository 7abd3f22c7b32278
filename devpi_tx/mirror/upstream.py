# -*- test-case-name: tests.mirror.test_upstream -*-
"""
The treq client for an upstream simple index: one persistent connection
pool, PEP 691 negotiation, ETags, credentials kept out of URLs, bounded
timeouts (a stalled body counts).
"""

from __future__ import annotations

import base64
import platform
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.web._newclient import RequestGenerationFailed, RequestTransmissionFailed, ResponseFailed
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers

from devpi_tx import DEVPI_SERVER_VERSION, __version__

ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
USER_AGENT = f"devpi-server/{DEVPI_SERVER_VERSION} devpi_tx/{__version__} (py{platform.python_version()}; {platform.system().lower()})"


class UpstreamError(Exception):
    """Upstream could not be reached, timed out or answered an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Fetched:
    status: int
    body: bytes
    etag: str | None
    serial: int
    content_type: str
    url: str


_NETWORK_ERRORS = (
    TimeoutError,
    CancelledError,
    error.ConnectError,
    error.ConnectionLost,
    error.ConnectionDone,
    ResponseFailed,
    RequestGenerationFailed,
    RequestTransmissionFailed,
    SchemeNotSupported,
    OSError,
    SSL.Error,
)

_CONNECT_REASONS: list[tuple[type[BaseException], str]] = [
    (error.DNSLookupError, "cannot resolve the host name"),
    (error.ConnectionRefusedError, "connection refused"),
    (error.NoRouteError, "no route to the host"),
    (error.TimeoutError, "timed out connecting"),
    (error.ConnectingCancelledError, "timed out connecting"),
    (error.ConnectionDone, "upstream closed the connection"),
    (error.ConnectionLost, "upstream closed the connection"),
    (SchemeNotSupported, "unsupported URL scheme"),
]


def _reasons(e: BaseException) -> list[BaseException]:
    """C{e} and what it wraps (Twisted's HTTP client wraps the real cause in lists of failures)."""
    found = [e]
    for failure in getattr(e, "reasons", None) or []:
        value = getattr(failure, "value", failure)
        if isinstance(value, BaseException):
            found += _reasons(value)
    return found


def network_error(e: BaseException) -> BaseException:
    """
    C{e} when it is a failure of the network or of upstream; anything else
    is our own bug and is raised as it is, not taken for an upstream outage.
    """
    if isinstance(e, _NETWORK_ERRORS):
        return e
    raise e


def describe_failure(e: BaseException, timeout: float) -> str:
    """
    What went wrong with an upstream request, in words for a user (no
    Python reprs): C{upstream timed out after 5 s}, C{connection refused}.
    """
    network_error(e)
    reasons = _reasons(e)
    if any(isinstance(r, (TimeoutError, CancelledError)) for r in reasons):
        return f"upstream timed out after {timeout:g} s"
    for reason in reasons:
        for kind, text in _CONNECT_REASONS:
            if isinstance(reason, kind):
                return f"upstream failed: {text}"
    last = reasons[-1]
    detail = getattr(last, "strerror", None) or " ".join(str(last).split())[:200] or last.__class__.__name__
    if detail.startswith(("[<", "<")):
        detail = last.__class__.__name__
    return f"upstream failed: {detail}"


def split_credentials(url: str) -> tuple[str, bytes | None]:
    """C{url} without C{user:password@}, and the Basic auth header value."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    clean = urlunsplit(parts._replace(netloc=host))
    secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return clean, b"Basic " + base64.b64encode(secret.encode("utf-8"))


def with_credentials(url: str, mirror_url: str) -> str:
    """C{url} with the credentials of C{mirror_url} when on the same host."""
    source = urlsplit(mirror_url)
    target = urlsplit(url)
    if source.username is None or source.hostname != target.hostname:
        return url
    return urlunsplit(target._replace(netloc=source.netloc))


def _header(headers: Headers, name: bytes) -> str | None:
    values = headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


class QuietPool(HTTPConnectionPool):
    """A persistent connection pool that does not log every new connection."""

    class _factory(_HTTP11ClientFactory):  # noqa: N801 - the name HTTPConnectionPool looks up
        noisy = False


class Upstream:
    """
    Fetches from upstream indexes through C{client} (a treq HTTPClient, or
    StubTreq in tests); timeouts run on C{reactor}.
    """

    _log = Logger()

    def __init__(self, client: Any, reactor: Any, timeout: float = 5.0) -> None:
        self._client = client
        self._reactor = reactor
        self.timeout = timeout
        self.fetches = 0

    def _headers(self, auth: bytes | None, etag: str | None = None, accept: str = ACCEPT) -> Headers:
        headers = Headers({b"User-Agent": [USER_AGENT.encode()], b"Accept": [accept.encode()]})
        if auth:
            headers.setRawHeaders(b"Authorization", [auth])
        if etag:
            headers.setRawHeaders(b"If-None-Match", [etag.encode("latin-1")])
        return headers

    async def fetch(self, url: str, etag: str | None = None, timeout: float | None = None) -> Fetched:
        """
        GET a simple page; the whole exchange, body included, must finish
        within C{timeout}.

        @raise UpstreamError: on network errors and timeouts (not on HTTP
            error statuses, which are returned).
        """
        clean, auth = split_credentials(url)
        limit = self.timeout if timeout is None else timeout
        self.fetches += 1

        async def exchange() -> Fetched:
            response = await self._client.request("GET", clean, headers=self._headers(auth, etag))
            body = await response.content() if response.code == 200 else b""
            serial_text = _header(response.headers, b"X-PYPI-LAST-SERIAL") or "-1"
            try:
                serial = int(serial_text)
            except ValueError:
                serial = -1
            final = getattr(response.request, "absoluteURI", None)
            return Fetched(
                status=response.code,
                body=body,
                etag=_header(response.headers, b"ETag"),
                serial=serial,
                content_type=_header(response.headers, b"Content-Type") or "",
                url=final.decode("utf-8") if isinstance(final, bytes) else clean,
            )

        d = Deferred.fromCoroutine(exchange())
        d.addTimeout(limit, self._reactor)
        try:
            return await d
        except UpstreamError:
            raise
        except Exception as e:
            raise UpstreamError(f"{clean}: {describe_failure(e, limit)}") from network_error(e)

    async def open(self, url: str, auth_source: str | None = None) -> Any:
        """
        Start a streamed GET of a file; returns the treq response once its
        headers arrived (within the timeout).  The caller reads the body.
        """
        clean, auth = split_credentials(url)
        if auth is None and auth_source:
            _, auth = split_credentials(with_credentials(url, auth_source))
        self.fetches += 1
        d = self._client.request("GET", clean, headers=self._headers(auth, accept="*/*"), unbuffered=True)
        d.addTimeout(self.timeout, self._reactor)
        try:
            return await d
        except Exception as e:
            raise UpstreamError(f"{clean}: {describe_failure(e, self.timeout)}") from network_error(e)
