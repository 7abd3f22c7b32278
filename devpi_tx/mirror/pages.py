# -*- test-case-name: tests.mirror.test_mirror -*-
"""
Mirror indexes: upstream pages cached in the store, freshness and not-found
answers in memory, one upstream fetch per page at a time, stale answers when
upstream fails (spec section 5).
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from devpi_tx.domain import keys
from devpi_tx.mirror.simpleparse import (
    ParseError,
    UpstreamLink,
    parse_project_list,
    parse_project_page,
)
from devpi_tx.mirror.upstream import Fetched, Upstream, UpstreamError
from devpi_tx.model.errors import UpstreamFailed
from devpi_tx.model.names import project_of
from devpi_tx.store.coalesce import Coalescer
from devpi_tx.store.interfaces import IStore, ITransaction

DEFAULT_EXPIRY = 1800
LIST_TIMEOUT = 30.0


class NameList:
    """
    A sorted set of project names kept as one string plus offsets, so a
    PyPI-sized list costs a few bytes per name.
    """

    def __init__(self, names: Iterable[str]) -> None:
        ordered = sorted(set(names))
        self._blob = "\n".join(ordered)
        self._offsets = array("L")
        position = 0
        for name in ordered:
            self._offsets.append(position)
            position += len(name) + 1

    def __len__(self) -> int:
        return len(self._offsets)

    def _at(self, i: int) -> str:
        start = self._offsets[i]
        end = self._offsets[i + 1] - 1 if i + 1 < len(self._offsets) else len(self._blob)
        return self._blob[start:end]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not self._offsets:
            return False
        i = bisect.bisect_left(range(len(self._offsets)), name, key=self._at)
        return i < len(self._offsets) and self._at(i) == name

    def __iter__(self) -> Iterator[str]:
        if self._blob:
            yield from self._blob.split("\n")


@dataclass
class MirrorPage:
    stage: str
    links: list[dict[str, Any]]
    versions: list[str]
    stale: bool = False
    serial: int = -1
    expires: float = 0.0
    written: int | None = None
    """The store serial at which this answer was fetched and stored, if it was."""


@dataclass
class _Names:
    names: NameList
    expires: float
    etag: str | None = None


def _unsafe(part: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", part)


# any hex string names a directory, as devpi's h[0:3]/h[3:16]; under four
# characters there would be no second directory
_HASH_DIRS = re.compile(r"[0-9a-fA-F]{4,}")


def link_relpath(stage: str, link: UpstreamLink) -> str:
    """
    Where a mirrored file lives (spec 1.13): C{+f/h[0:3]/h[3:16]/} by the
    link's hash (sha256 if given, else the first one) whatever its length,
    else C{+e/} by the URL's scheme, host, port and directories, each
    C{/} a C{_} (empty segments too) and other unsafe characters C{_}.
    """
    digest = link.hashes.get("sha256") or next(iter(link.hashes.values()), None)
    if digest and _HASH_DIRS.fullmatch(digest):
        return f"{stage}/+f/{digest[:3]}/{digest[3:16]}/{link.filename}"
    parts = urlsplit(link.url)
    host = parts.netloc.rpartition("@")[2]  # credentials never go into a path
    dirname = f"{parts.scheme}/{host}{parts.path}".rsplit("/", 1)[0].replace("/", "_")
    return f"{stage}/+e/{_unsafe(dirname)}/{link.filename}"


def _versions(links: list[UpstreamLink], given: list[str] | None) -> list[str]:
    if given is not None:
        return given
    found: dict[str, None] = {}
    for link in links:
        parsed = project_of(link.filename)
        if parsed:
            found.setdefault(parsed[1])
    return list(found)


def _name_list(body: bytes, content_type: str) -> NameList:
    return NameList(parse_project_list(body, content_type))


def mirror_url(config: dict[str, Any]) -> str:
    return str(config.get("mirror_url", "")).rstrip("/") + "/"


@dataclass
class MirrorService:
    """Mirror state of one server process."""

    store: IStore
    upstream: Upstream
    reactor: Any
    offline: bool = False
    default_expiry: int = DEFAULT_EXPIRY
    run_in_thread: Callable[..., Any] = maybeDeferred
    _fresh: dict[tuple[str, str], float] = field(default_factory=dict)
    _missing: dict[tuple[str, str], float] = field(default_factory=dict)
    _pages: Coalescer = field(default_factory=Coalescer)
    _names: dict[str, _Names] = field(default_factory=dict)
    _name_loads: Coalescer = field(default_factory=Coalescer)
    hits: int = 0

    _log = Logger()

    def expiry(self, config: dict[str, Any]) -> int:
        return int(config.get("mirror_cache_expiry", self.default_expiry))

    def forget(self, stage: str, project: str) -> None:
        self._fresh.pop((stage, project), None)
        self._missing.pop((stage, project), None)

    # -- project pages -------------------------------------------------------

    async def page(self, stage: str, config: dict[str, Any], project: str, refresh: bool = False) -> MirrorPage | None:
        """
        The links of C{project} on mirror C{stage}; C{None} if upstream has
        no such project.

        @raise UpstreamFailed: when upstream fails and nothing is cached.
        """
        key = (stage, project)
        now = self.reactor.seconds()
        expiry = self.expiry(config)
        record = await self.store.read(lambda tx: tx.get(keys.mirror(stage, project)))
        if record == {}:
            record = None
        if self.offline:
            return None if record is None else await self._offline_page(stage, record)
        if not refresh:
            # fetch times, not deadlines: a changed mirror_cache_expiry applies at once
            fetched = self._fresh.get(key)
            if record is not None and fetched is not None and now < fetched + expiry:
                self.hits += 1
                return self._page(stage, record, expires=fetched + expiry)
            missing = self._missing.get(key)
            if record is None and missing is not None and now < missing + expiry:
                return None
            if record is None and self.known(stage, config, project) is False:
                self._missing[key] = now
                return None
        return await self._pages.run(key, lambda: self._fetch(stage, config, project, record, refresh))

    def _page(self, stage: str, record: dict[str, Any], stale: bool = False, expires: float = 0.0) -> MirrorPage:
        return MirrorPage(
            stage=stage,
            links=record.get("links", []),
            versions=record.get("versions", []),
            stale=stale,
            serial=record.get("serial", -1),
            expires=expires,
        )

    async def _offline_page(self, stage: str, record: dict[str, Any]) -> MirrorPage:
        async def present(tx: ITransaction) -> set[str]:
            found = set()
            for link in record.get("links", []):
                entry = await tx.get(keys.file(link["relpath"]))
                if entry and entry.get("last_modified"):
                    found.add(link["relpath"])
            return found

        cached = await self.store.read(present)
        page = self._page(stage, record, stale=True)
        page.links = [link for link in page.links if link["relpath"] in cached]
        return page

    def _stale_or_fail(self, stage: str, record: dict[str, Any] | None, message: str) -> MirrorPage:
        self._log.warn("Upstream problem for {stage}: {message}", stage=stage, message=message)
        if record is None:
            raise UpstreamFailed(message)
        return self._page(stage, record, stale=True)

    async def _fetch(
        self, stage: str, config: dict[str, Any], project: str, record: dict[str, Any] | None, refresh: bool
    ) -> MirrorPage | None:
        key = (stage, project)
        url = mirror_url(config) + project + "/"
        etag = None if refresh or record is None else record.get("etag")
        try:
            fetched = await self.upstream.fetch(url, etag=etag)
        except UpstreamError as e:
            return self._stale_or_fail(stage, record, e.message)
        now = self.reactor.seconds()
        expires = now + self.expiry(config)
        if fetched.status == 304 and record is not None:
            self._fresh[key] = now
            return self._page(stage, record, expires=expires)
        if fetched.status == 404:
            self._missing[key] = now
            self._fresh.pop(key, None)
            return None if record is None else self._page(stage, record, stale=True)
        if fetched.status != 200:
            return self._stale_or_fail(stage, record, f"{fetched.status} status on GET {url}")
        ignore_serial = bool(config.get("mirror_ignore_serial_header"))
        if record is not None and not ignore_serial and 0 <= fetched.serial < record.get("serial", -1):
            return self._stale_or_fail(
                stage, record, f"upstream serial {fetched.serial} is older than cached {record['serial']} for {url}"
            )
        try:
            links, versions = parse_project_page(fetched.body, fetched.content_type, fetched.url, project)
        except ParseError as e:
            return self._stale_or_fail(stage, record, f"bad page from {url}: {e}")
        new = self._record(stage, project, links, versions, fetched, ignore_serial)

        async def store(tx: ITransaction) -> int:
            await self._store_page(tx, stage, project, new)
            return int(tx.serial)

        before, written = await self.store.write(store)
        self._fresh[key] = now
        self._missing.pop(key, None)
        page = self._page(stage, new, expires=expires)
        if written > before:  # a new serial: not a write that changed nothing
            page.written = written
        return page

    def _record(
        self,
        stage: str,
        project: str,
        links: list[UpstreamLink],
        versions: list[str] | None,
        fetched: Fetched,
        ignore_serial: bool,
    ) -> dict[str, Any]:
        stored = []
        for link in links:
            item = link.to_json()
            item["relpath"] = link_relpath(stage, link)
            parsed = project_of(link.filename)
            item["version"] = parsed[1] if parsed else ""
            stored.append(item)
        return {
            "project": project,
            "links": stored,
            "versions": _versions(links, versions),
            "etag": fetched.etag,
            "serial": -1 if ignore_serial else fetched.serial,
        }

    @staticmethod
    async def _store_page(tx: ITransaction, stage: str, project: str, record: dict[str, Any]) -> None:
        tx.set(keys.mirror(stage, project), record)
        for link in record["links"]:
            fkey = keys.file(link["relpath"])
            if await tx.get(fkey) is None:
                entry = {
                    "url": link["url"],
                    "hashes": link.get("hashes", {}),
                    "project": project,
                    "version": link.get("version", ""),
                }
                if link.get("hashes"):
                    algo, value = next(iter(link["hashes"].items()))
                    entry["hash_spec"] = f"{algo}={value}"
                if link.get("core_metadata"):
                    entry["core_metadata"] = link["core_metadata"]
                if link.get("size"):
                    entry["size"] = link["size"]
                tx.set(fkey, entry)

    async def forget_page(self, stage: str, project: str) -> None:
        """Drop the cached page (C{+simple/P/refresh}, project deletion)."""
        self.forget(stage, project)

        async def forget(tx: ITransaction) -> None:
            if await tx.get(keys.mirror(stage, project)):
                tx.set(keys.mirror(stage, project), {})

        await self.store.write(forget)

    # -- project lists ----------------------------------------------------------

    def known(self, stage: str, config: dict[str, Any], project: str) -> bool | None:
        """
        Whether the upstream list names C{project}; C{None} (then the page
        itself is asked) unless a fresh list is loaded.  Only C{+simple/}
        loads the list: a PyPI-sized one is a large download and a second
        of parsing, which a project lookup must not wait for or compete with.
        """
        if config.get("mirror_no_project_list") or self.offline:
            return None
        names = self._names.get(stage)
        if names is None or names.expires <= self.reactor.seconds():
            return None
        return project in names.names

    def _load_names_in_background(self, stage: str, config: dict[str, Any]) -> Deferred[Any]:
        d = self._name_loads.run(stage, lambda: self._load_names(stage, config))
        d.addErrback(lambda f: self._log.failure("loading project list of {stage}", f, stage=stage))
        return d

    async def _load_names(self, stage: str, config: dict[str, Any]) -> NameList | None:
        old = self._names.get(stage)
        url = mirror_url(config)
        try:
            fetched = await self.upstream.fetch(
                url, etag=old.etag if old else None, timeout=max(self.upstream.timeout, LIST_TIMEOUT)
            )
        except UpstreamError as e:
            self._log.warn("Project list of {stage}: {message}", stage=stage, message=e.message)
            return None
        expires = self.reactor.seconds() + self.expiry(config)
        if fetched.status == 304 and old is not None:
            old.expires = expires
            return old.names
        if fetched.status != 200:
            self._log.warn("Project list of {stage}: status {status}", stage=stage, status=fetched.status)
            return None
        try:
            # a PyPI-sized list takes a second to parse: not on the reactor thread
            names: NameList = await self.run_in_thread(_name_list, fetched.body, fetched.content_type)
        except ParseError as e:
            self._log.warn("Project list of {stage}: {message}", stage=stage, message=str(e))
            return None
        self._names[stage] = _Names(names, expires, fetched.etag)
        return names

    async def project_names(self, stage: str, config: dict[str, Any]) -> tuple[Iterable[str], bool]:
        """
        Names for C{+simple/}: the upstream list (fetched if needed), or
        the locally cached projects when there is none.  Second item: stale.
        """
        names = self._names.get(stage)
        fresh = names is not None and names.expires > self.reactor.seconds()
        if not fresh and not self.offline and not config.get("mirror_no_project_list"):
            await self._load_names_in_background(stage, config)
            names = self._names.get(stage)
            fresh = names is not None and names.expires > self.reactor.seconds()
        if names is not None:
            return names.names, not fresh
        prefix = keys.mirror_prefix(stage)

        async def cached_names(tx: ITransaction) -> list[str]:
            return [k[len(prefix) :] for k, v in await tx.items(prefix) if v]

        cached = await self.store.read(cached_names)
        return cached, not (self.offline or config.get("mirror_no_project_list"))
