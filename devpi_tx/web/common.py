# -*- test-case-name: tests.web.test_hardening -*-
"""
What the route modules share: the Klein app, request helpers, and the base
class holding a server process's collaborators.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, quote_from_bytes

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from devpi_tx.domain import keys, users
from devpi_tx.domain.auth import TokenSigner
from devpi_tx.mirror.download import MirrorFiles
from devpi_tx.mirror.pages import MirrorService
from devpi_tx.model.errors import Invalid, TooLarge
from devpi_tx.model.policy import Policy
from devpi_tx.store.factory import open_search_index
from devpi_tx.store.interfaces import ISearchIndex, IStore
from devpi_tx.web import render
from devpi_tx.web.identity import Authenticator
from devpi_tx.web.metrics import Metrics
from devpi_tx.web.pagecache import PageCache

_PATH_SAFE = "/:@!$&'()*+,;=-._~"

F = TypeVar("F", bound=Callable[..., Any])
_written = itertools.count()  # the order handlers are written in: error handlers are tried in it


def route(rule: str, **kwargs: Any) -> Callable[[F], F]:
    """Marks a handler method for C{rule} (Klein's C{route} arguments); see L{build_app}."""

    def mark(f: F) -> F:
        f.__dict__.setdefault("_devpi_routes", []).append((next(_written), rule, kwargs))
        return f

    return mark


def handles(*exceptions: type[Exception]) -> Callable[[F], F]:
    """Marks a method as the handler of C{exceptions} (Klein's C{handle_errors}); see L{build_app}."""

    def mark(f: F) -> F:
        f.__dict__["_devpi_handles"] = (next(_written), exceptions)
        return f

    return mark


def build_app(cls: type) -> Klein:
    """
    A Klein app of C{cls}'s own: the routes and error handlers its methods
    (and its bases') are marked with, registered in the order they were
    written.  No Klein app is shared between classes or kept in a module.
    """
    app = Klein()
    # "//" must not be folded into "/" by a redirect: paths are names here
    app.url_map.merge_slashes = False
    marked: list[tuple[int, Any, Any]] = []
    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if name in seen:
                continue  # overridden in a subclass
            seen.add(name)
            for order, rule, kwargs in getattr(value, "_devpi_routes", ()):
                marked.append((order, app.route(rule, **kwargs), value))
            handled = getattr(value, "_devpi_handles", None)
            if handled is not None:
                marked.append((handled[0], app.handle_errors(*handled[1]), value))
    for _, register, handler in sorted(marked, key=lambda item: item[0]):
        register(handler)
    return app


@dataclass
class WebConfig:
    serverdir: str
    uuid: str
    policy: Policy
    signer: TokenSigner
    outside_url: str | None = None
    host: str = "localhost"
    port: int = 3141


MAX_JSON_BODY = 64 * 1024
"""The largest JSON body of a configuration request (users, indexes, login, push)."""

MAX_JSON_DEPTH = 32
"""How deeply a JSON body may nest arrays and objects."""


def _refuse_constant(name: str) -> Any:
    raise Invalid(f"Bad request: {name} is not a valid JSON number")


def parse_json(raw: bytes, limit: int = MAX_JSON_BODY) -> Any:
    """
    A JSON document from a client: at most C{limit} bytes, at most
    L{MAX_JSON_DEPTH} levels deep, finite numbers only (a stored C{NaN}
    would make every later answer that shows it invalid JSON).

    @raise TooLarge: when too large; L{Invalid} when not such a document.
    """
    if len(raw) > limit:
        raise TooLarge(f"JSON body larger than {limit} bytes")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise Invalid(f"Bad request: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise Invalid("Bad request: could not decode json") from None
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise Invalid(f"Bad request: JSON nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return value


def json_body(request: IRequest, limit: int = MAX_JSON_BODY) -> Any:
    request.content.seek(0, 2)
    if request.content.tell() > limit:
        raise TooLarge(f"JSON body larger than {limit} bytes")
    request.content.seek(0)
    raw = request.content.read()
    if not raw.strip():
        return {}
    return parse_json(raw, limit)


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
        search: ISearchIndex | None = None,
    ) -> None:
        """C{search}: the storage engine's search index; SQLite's in C{config.serverdir} when not given."""
        self._config = config
        self._search = search if search is not None else open_search_index("sqlite", config.serverdir)
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
            if key.startswith(keys.INDEXES):
                self._ixconfigs.pop(keys.name_in(key, keys.INDEXES), None)
                self._ixconfig_changes += 1

    async def _ixconfig(self, stage: str) -> dict[str, Any]:
        """
        An index's config, kept in memory until a commit (of any process,
        heard through the store) changes it: uploads need it on every request.

        @raise NotFound: when there is no such index.
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

    def _redirect(self, request: IRequest, path: str | bytes, query: bytes = b"") -> bytes:
        """
        Redirect to C{path} (a decoded path, or the raw path of a request)
        on this server.  The C{Location} is percent-encoded: no character a
        client put into its request goes out as it came.
        """
        if isinstance(path, str):
            quoted = quote(path, safe=_PATH_SAFE)
        else:
            quoted = quote_from_bytes(path, safe=_PATH_SAFE + "%")
        location = quote(self._base_url(request), safe=_PATH_SAFE + "%[]") + quoted
        if query:
            location += "?" + quote_from_bytes(query, safe=_PATH_SAFE + "%?")
        request.redirect(location.encode("ascii"))
        return b""

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

    async def _write(
        self, request: IRequest, fn: Callable[[Any], Any], prepare: Callable[[], None] | None = None
    ) -> Any:
        result, serial = await self._store.write(fn, prepare)
        request.setHeader(b"X-Devpi-Serial", str(serial).encode())
        return result
