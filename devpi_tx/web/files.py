# -*- test-case-name: tests.web.test_api_packages,tests.web.test_zipbomb -*-
"""
Files under C{+f/} and C{+e/}: stored files from disk, mirror files fetched
on first request, PEP 658 metadata, tox result uploads (spec 1.13, 4.5, 5.7).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from devpi_tx.domain import keys, releases
from devpi_tx.domain.users import get_ixconfig
from devpi_tx.mirror.upstream import UpstreamError, with_credentials
from devpi_tx.model.errors import DomainError, NotFound, TooLarge, UpstreamFailed
from devpi_tx.model.names import project_of
from devpi_tx.store.files import METADATA_LIMIT, MetadataTooLarge, read_wheel_metadata, unlink_if_present
from devpi_tx.store.interfaces import ITransaction
from devpi_tx.web import render
from devpi_tx.web.common import Base, has_arg, header, parse_json, route
from devpi_tx.web.filesend import WHOLE, answer_range, byte_range, content_type, send_file, span
from devpi_tx.web.paths import parse_path

IMMUTABLE = b"max-age=365000000, immutable, public"
METADATA = ".metadata"
MAX_TOXRESULT = 16 * 1024 * 1024
"""The largest tox result document a client may upload."""


_KNOWN_MAX = 20000

METADATA_CACHE_BYTES = 32 * 1024 * 1024
"""The most bytes of extracted wheel metadata one process keeps."""

_ENTRY_OVERHEAD = 200


class WheelMetadataCache:
    """
    The C{METADATA} of stored wheels, extracted once (in a worker thread,
    reading at most C{limit + 1} bytes) and kept by the wheel's sha256: a
    wheel never changes under its hash, so an entry never goes stale.

    Kept in memory, least recently used out first once C{max_bytes} are
    held, rather than written beside the wheel as upstream metadata is: an
    uploaded wheel then has no file outside its commit for deletion, push,
    export and fsck to know about, and a restart costs one extraction per
    wheel asked for.  Metadata over C{limit} and unreadable wheels are kept
    as such (a few bytes), so they are not read again either.

    Requests for a wheel whose extraction is under way wait for it; one
    that goes away (a cancelled request) does not stop it for the others.
    """

    def __init__(
        self,
        run: Callable[..., Deferred[Any]],
        max_bytes: int = METADATA_CACHE_BYTES,
        limit: int = METADATA_LIMIT,
    ) -> None:
        self._run = run
        self._max_bytes = max_bytes
        self.limit = limit
        self._entries: OrderedDict[str, bytes | MetadataTooLarge | None] = OrderedDict()
        self._bytes = 0
        self._pending: dict[str, list[Deferred[Any]]] = {}
        self.extractions = 0
        """How many times a wheel was opened."""

    @property
    def size(self) -> int:
        """Bytes held, counting a small overhead per entry."""
        return self._bytes

    async def get(self, key: str, path: str) -> bytes | None:
        """
        The metadata of the wheel at C{path} whose content C{key} names, or
        C{None} when it is not a readable wheel.

        @raise MetadataTooLarge: it is over C{limit}.
        @raise OSError: the wheel could not be read (not kept).
        """
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._answer(self._entries[key])
        waiter: Deferred[Any] = Deferred()
        waiters = self._pending.get(key)
        if waiters is not None:
            waiters.append(waiter)
        else:
            self._pending[key] = [waiter]
            self.extractions += 1
            maybeDeferred(self._run, self._extract, path, self.limit).addBoth(self._extracted, key)
        return self._answer(await waiter)

    @staticmethod
    def _extract(path: str, limit: int) -> bytes | MetadataTooLarge | None:
        try:
            return read_wheel_metadata(path, limit)
        except MetadataTooLarge as e:
            return MetadataTooLarge(e.limit)  # without the traceback, which holds the bytes read

    def _extracted(self, result: Any, key: str) -> None:
        if not isinstance(result, Failure):
            self._keep(key, result)
        for waiter in self._pending.pop(key):
            if waiter.called:  # cancelled
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _keep(self, key: str, found: bytes | MetadataTooLarge | None) -> None:
        cost = _ENTRY_OVERHEAD + (len(found) if isinstance(found, bytes) else 0)
        if cost > self._max_bytes:
            return
        self._entries[key] = found
        self._bytes += cost
        while self._bytes > self._max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= _ENTRY_OVERHEAD + (len(dropped) if isinstance(dropped, bytes) else 0)

    @staticmethod
    def _answer(found: bytes | MetadataTooLarge | None) -> bytes | None:
        if isinstance(found, MetadataTooLarge):
            raise MetadataTooLarge(found.limit)  # a kept one would gather a traceback per raise
        return found


def _content_key(relpath: str, entry: dict[str, Any]) -> str:
    """What names a stored file's content: its sha256, else where and when it was stored."""
    sha256 = (entry.get("hashes") or {}).get("sha256")
    return f"sha256={sha256}" if sha256 else f"{relpath} {entry.get('last_modified')}"


class FileRoutes(Base):
    """
    Stored files are served before routing, without a store read, from a
    table of the ones committed or served (path on disk and headers); a
    commit that changes or removes a file's entry updates the table.
    """

    _log = Logger()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known_files: dict[str, tuple[str, tuple[tuple[bytes, bytes], ...]]] = {}
        self._store.subscribe(self._file_changed)
        self.metadata_cache = WheelMetadataCache(self._run)

    def _file_changed(self, serial: int, changes: dict[str, Any]) -> None:
        if any(key.startswith(keys.INDEXES) for key in changes):
            self._known_files.clear()
            return
        for key, value in changes.items():
            if not key.startswith(keys.FILES):
                continue
            relpath = keys.name_in(key, keys.FILES)
            if isinstance(value, dict) and value.get("last_modified"):
                # committed after its file was put in place: servable at once
                self._remember_file(relpath, self._store.files.local_path(relpath), value)
            else:
                self._known_files.pop(relpath, None)

    def _remember_file(self, relpath: str, path: str, entry: dict[str, Any]) -> None:
        if len(self._known_files) >= _KNOWN_MAX:
            self._known_files.clear()
        headers = [
            (b"Cache-Control", IMMUTABLE),
            (b"Content-Type", content_type(relpath.rsplit("/", 1)[-1])),
            (b"Accept-Ranges", b"bytes"),
        ]
        if entry.get("last_modified"):
            headers.append((b"Last-Modified", entry["last_modified"].encode("latin-1")))
        self._known_files[relpath] = (path, tuple(headers))

    def cached_file(self, request: IRequest) -> bytes | None:
        """
        The body (or byte range) of a stored file already served once,
        answered before routing; C{None} when the request is not for one,
        is conditional or asks for more than L{WHOLE} bytes (those take the
        routed path).
        """
        known = self._known_files
        method = request.method
        if not known or method not in (b"GET", b"HEAD") or request.getHeader(b"If-Range"):
            return None
        relpath = parse_path(request.path).relpath
        if relpath is None:
            return None
        found = known.get(relpath)
        if found is None or render.accepts_json(header(request, b"Accept")):
            return None
        path, headers = found
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                try:
                    wanted = byte_range(request.getHeader(b"Range"), size)
                except ValueError:
                    return None  # 416 from the routed path
                offset, length = span(wanted, size)
                if length > WHOLE:
                    return None
                body = b""
                if method == b"GET":
                    f.seek(offset)
                    body = f.read(length)
        except OSError:
            known.pop(relpath, None)
            return None
        answer_range(request, wanted, size)
        for name, value in headers:
            request.setHeader(name, value)
        if method == b"HEAD":
            request.setHeader(b"Content-Length", str(length).encode())
        return body

    @route("/<user>/<index>/+f/<path:rest>", methods=["GET", "HEAD"])
    @route("/<user>/<index>/+e/<path:rest>", methods=["GET", "HEAD"])
    async def file_get(self, request: IRequest, user: str, index: str, rest: str) -> Any:
        stage, relpath = _file_path(request, user, index, rest)
        return await self._file(request, stage, relpath)

    @route("/<user>/<index>/+f/<path:rest>", methods=["DELETE"])
    @route("/<user>/<index>/+e/<path:rest>", methods=["DELETE"])
    async def file_delete(self, request: IRequest, user: str, index: str, rest: str) -> bytes:
        _, relpath = _file_path(request, user, index, rest)
        identity = await self._auth.identify(request)
        force = has_arg(request, b"force")
        await self._write(request, lambda tx: releases.delete_file(tx, relpath, force, identity, self._policy))
        return self._reply(request, message=f"package {relpath!r} deleted")

    @route("/<user>/<index>/+f/<path:rest>", methods=["POST"])
    async def file_post(self, request: IRequest, user: str, index: str, rest: str) -> bytes:
        """A tox result for the release file (spec 4.5)."""
        _, relpath = _file_path(request, user, index, rest)
        return await self._toxresult(request, relpath)

    async def _file(self, request: IRequest, stage: str, relpath: str) -> Any:
        async def config_and_entry(tx: ITransaction) -> tuple[dict[str, Any], dict[str, Any] | None]:
            return await get_ixconfig(tx, stage), await tx.get(keys.file(relpath))

        config, entry = await self._store.read(config_and_entry)
        if entry is None and relpath.endswith(METADATA):
            return await self._metadata(request, config, relpath)
        if entry is None and config.get("type") == "mirror" and self._mirror is not None:
            entry = await self._find_on_mirror(stage, config, relpath)
        if entry is None:
            raise NotFound("no such file")
        if render.accepts_json(header(request, b"Accept")):
            names = ("last_modified", "hash_spec", "hashes", "project", "version", "url")
            return self._reply(request, "releasefilemeta", {k: entry[k] for k in names if k in entry})
        path = self._store.files.local_path(relpath)
        if entry.get("last_modified") and os.path.exists(path):
            if request.method == b"GET":
                self._remember_file(relpath, path, entry)
            return await self._send(request, path, entry)
        if not entry.get("url"):
            raise NotFound("no such file")
        return await self._from_upstream(request, config, relpath, entry, path)

    async def _send(self, request: IRequest, path: str, entry: dict[str, Any]) -> Any:
        request.setHeader(b"Cache-Control", IMMUTABLE)
        if entry.get("last_modified"):
            request.setHeader(b"Last-Modified", entry["last_modified"].encode("latin-1"))
        return await send_file(request, path)

    async def _find_on_mirror(self, stage: str, config: dict[str, Any], relpath: str) -> dict[str, Any] | None:
        """An unknown mirror path (a lock file's URL): load the project's page, look again."""
        assert self._mirror is not None
        parsed = project_of(relpath.rsplit("/", 1)[-1])
        if parsed is None:
            return None
        try:
            await self._mirror.page(stage, config, parsed[0])
        except DomainError:
            return None
        return await self._store.read(lambda tx: tx.get(keys.file(relpath)))  # type: ignore[no-any-return]

    async def _from_upstream(
        self, request: IRequest, config: dict[str, Any], relpath: str, entry: dict[str, Any], path: str
    ) -> Any:
        mirror_url = str(config.get("mirror_url", ""))
        if self._mirror is not None and self._mirror.offline:
            raise NotFound(f"{relpath} is not cached and the server is offline")
        if config.get("mirror_use_external_urls"):
            request.redirect(with_credentials(entry["url"], mirror_url).encode())
            return b""
        if request.method == b"HEAD":
            request.setHeader(b"Content-Type", content_type(relpath.rsplit("/", 1)[-1]))
            if entry.get("size"):
                request.setHeader(b"Content-Length", str(entry["size"]).encode())
            return b""
        if self._mirror_files is None:
            raise NotFound("no such file")
        try:
            sent = await self._mirror_files.fetch(request, relpath, entry, mirror_url)
        except UpstreamError as e:
            if request.startedWriting:  # type: ignore[attr-defined]
                return b""  # the connection was aborted: the client sees the failure
            request.responseHeaders.removeHeader(b"Content-Length")
            raise UpstreamFailed(e.message) from None
        if sent:
            return b""
        fresh = await self._store.read(lambda tx: tx.get(keys.file(relpath)))
        return await self._send(request, path, fresh or entry)

    async def _metadata(self, request: IRequest, config: dict[str, Any], relpath: str) -> Any:
        """PEP 658: a stored file if there is one, else from the wheel, else (mirrors) from upstream."""
        base = relpath[: -len(METADATA)]
        wheel = await self._store.read(lambda tx: tx.get(keys.file(base)))
        if wheel is None or not base.endswith(".whl"):
            raise NotFound("no such file")
        path = self._store.files.local_path(relpath)
        mime = b"application/octet-stream"
        if os.path.exists(path):
            request.setHeader(b"Cache-Control", IMMUTABLE)
            return await send_file(request, path, mime)
        wheel_path = self._store.files.local_path(base)
        data = None
        if wheel.get("last_modified") and os.path.exists(wheel_path):
            try:
                data = await self.metadata_cache.get(_content_key(base, wheel), wheel_path)
            except MetadataTooLarge as e:
                # the wheel is kept, but its metadata is not inflated to be served
                raise NotFound(f"metadata of {base} is larger than {e.limit} bytes, it is not served") from None
            except OSError:
                data = None
        elif wheel.get("core_metadata") and self._mirror is not None and not self._mirror.offline:
            data = await self._upstream_metadata(config, wheel)
            if isinstance(wheel["core_metadata"], dict) and "sha256" in wheel["core_metadata"]:
                await self._keep_metadata(base, path, data)
        if data is None:
            raise NotFound(f"no metadata found in {base}")
        request.setHeader(b"Cache-Control", IMMUTABLE)
        request.setHeader(b"Content-Type", mime)
        return data

    async def _keep_metadata(self, base: str, path: str, data: bytes) -> None:
        """
        Keep upstream metadata that matched its sha256 beside where the wheel
        goes, so it is served when upstream is slow or down.  It is derived
        (the file entry names its hash), so it is placed without a commit;
        when the entry went away meanwhile, it is removed again.
        """

        def place() -> None:
            prepared = self._store.files.prepare_bytes(data)
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.replace(prepared.temp_path, path)
            finally:
                prepared.discard()

        try:
            await self._run(place)
            if await self._store.read(lambda tx: tx.get(keys.file(base))) is None:
                await self._run(unlink_if_present, path)
        except OSError as e:
            self._log.warn("could not keep {path}: {error}", path=path, error=e)

    async def _upstream_metadata(self, config: dict[str, Any], wheel: dict[str, Any]) -> bytes:
        assert self._mirror is not None
        url = with_credentials(wheel["url"] + METADATA, str(config.get("mirror_url", "")))
        try:
            fetched = await self._mirror.upstream.fetch(url)
        except UpstreamError as e:
            raise UpstreamFailed(e.message) from None
        if fetched.status != 200:
            kind = NotFound if fetched.status == 404 else UpstreamFailed
            raise kind(f"error {fetched.status} getting {wheel['url']}{METADATA}")
        expected = wheel["core_metadata"]
        if isinstance(expected, dict):
            for algo, value in expected.items():
                if algo in hashlib.algorithms_available and hashlib.new(algo, fetched.body).hexdigest() != value:
                    raise UpstreamFailed(f"{algo} mismatch for {wheel['url']}{METADATA}")
        return fetched.body

    async def _toxresult(self, request: IRequest, relpath: str) -> bytes:
        identity = await self._auth.identify(request)
        request.content.seek(0, 2)
        if request.content.tell() > MAX_TOXRESULT:
            raise TooLarge(f"tox result larger than {MAX_TOXRESULT} bytes")
        request.content.seek(0)
        raw = request.content.read()
        parse_json(raw, MAX_TOXRESULT)
        content = await self._run(self._store.files.prepare_bytes, raw)
        try:
            path = await self._write(
                request,
                lambda tx: releases.store_toxresult(tx, relpath, content, identity, self._policy),
            )
        finally:
            content.discard()
        return self._reply(request, "toxresultpath", path)


def _file_path(request: IRequest, user: str, index: str, rest: str) -> tuple[str, str]:
    """
    The stage and relpath of a C{+f} or C{+e} URL.

    @raise NotFound: a path that is not a plain path below the index.
    """
    segments = rest.split("/")
    if ".." in segments or "" in segments or "\x00" in rest:
        raise NotFound("no such file")
    kind = "+e" if request.path.split(b"/")[3:4] == [b"+e"] else "+f"
    return f"{user}/{index}", f"{user}/{index}/{kind}/{rest}"
