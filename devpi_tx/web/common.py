"""
What the route modules share: the Klein app, request helpers, and the base
class holding a server process's collaborators.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from devpi_tx import users
from devpi_tx.auth import TokenSigner
from devpi_tx.download import MirrorFiles
from devpi_tx.interfaces import IStore
from devpi_tx.metrics import Metrics
from devpi_tx.mirror import MirrorService
from devpi_tx.model import Policy, bad_request
from devpi_tx.web import render
from devpi_tx.web.identity import Authenticator
from devpi_tx.web.pagecache import PageCache

app = Klein()
# "//" must not be folded into "/" by a redirect: paths are names here
app.url_map.merge_slashes = False


@dataclass
class WebConfig:
    serverdir: str
    files_dir: str
    uuid: str
    policy: Policy
    signer: TokenSigner
    outside_url: str | None = None
    host: str = "localhost"
    port: int = 3141


def json_body(request: IRequest) -> Any:
    request.content.seek(0)
    raw = request.content.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Bad request: could not decode json") from None


def has_arg(request: IRequest, name: bytes) -> bool:
    """Whether the query names C{name}, with or without a value (spec 3.4)."""
    _, _, query = request.uri.partition(b"?")
    return any(item.split(b"=", 1)[0] == name for item in query.split(b"&"))


def header(request: IRequest, name: bytes) -> str:
    value = request.getHeader(name)
    return value.decode("latin-1") if value else ""


class Base:
    """The collaborators of the route classes, and helpers for answers."""

    def __init__(
        self,
        config: WebConfig,
        store: IStore,
        run_in_thread: Callable[..., Deferred[Any]],
        mirror: MirrorService | None = None,
        mirror_files: MirrorFiles | None = None,
        clock: Callable[[], float] = time.time,
        events: Any = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._policy = config.policy
        self._run = run_in_thread
        self._auth = Authenticator(store, config.signer, run_in_thread)
        self._mirror = mirror
        self._mirror_files = mirror_files
        self._clock = clock
        self._events = events
        self.metrics = metrics or Metrics()
        self.pages = PageCache(store, clock)
        self.started = time.time()
        self._ixconfigs: dict[str, dict[str, Any]] = {}
        self._ixconfig_changes = 0
        store.subscribe(self._ixconfig_changed)

    def _ixconfig_changed(self, serial: int, changes: dict[str, Any]) -> None:
        for key in changes:
            if key[:2] == "i/":
                self._ixconfigs.pop(key[2:], None)
                self._ixconfig_changes += 1

    async def _ixconfig(self, stage: str) -> dict[str, Any]:
        """
        An index's config, kept in memory until a commit (of any process,
        heard through the store) changes it: uploads need it on every request.

        @raise APIError: 404 when there is no such index.
        """
        found = self._ixconfigs.get(stage)
        if found is None:
            changes = self._ixconfig_changes
            found = await self._store.read(lambda tx: users.get_ixconfig(tx, stage))
            if changes == self._ixconfig_changes:  # no config commit heard while reading
                self._ixconfigs[stage] = found
        return dict(found)

    def _base_url(self, request: IRequest) -> str:
        outside = header(request, b"X-Outside-URL") or self._config.outside_url
        if outside:
            return outside.rstrip("/")
        host = header(request, b"Host") or f"{self._config.host}:{self._config.port}"
        scheme = "https" if request.isSecure() else "http"
        return f"{scheme}://{host}"

    def _url_for(self, request: IRequest) -> Callable[[str], str]:
        base = self._base_url(request)
        return lambda relpath: f"{base}/{quote(relpath, safe='/+@:')}"

    def _reply(
        self,
        request: IRequest,
        result_type: str | None = None,
        result: Any = None,
        message: str = "",
        status: int = 200,
    ) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", render.JSON_TYPE)
        return render.envelope(result_type, result, message)

    async def _write(self, request: IRequest, fn: Callable[[Any], Any], prepare: Callable[[], None] | None = None) -> Any:
        result, serial = await self._store.write(fn, prepare)
        request.setHeader(b"X-Devpi-Serial", str(serial).encode())
        return result
