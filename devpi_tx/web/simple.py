# -*- test-case-name: tests.web.test_api_packages,tests.mirror.test_mirror -*-
"""
Simple pages and project/version JSON over an index and its bases, mirrors
included (spec 1.9-1.12, 5).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from devpi_tx.domain import queries, releases
from devpi_tx.mirror.pages import MirrorPage
from devpi_tx.model.errors import DomainError, Invalid, NotFound
from devpi_tx.model.names import normalize_name
from devpi_tx.store.interfaces import ITransaction
from devpi_tx.web import render
from devpi_tx.web.common import Base, has_arg, header, json_body, route
from devpi_tx.web.errors import UnsupportedMediaType
from devpi_tx.web.paths import LIST, parse_path

STALE_HEADERS = (
    (b"Cache-Control", b"max-age=0, must-revalidate, no-cache, no-store"),
    (b"Pragma", b"no-cache"),
)


@dataclass
class Rendered:
    content_type: bytes
    body: bytes
    serial: int
    expires: float | None = None
    stale: bool = False
    headers: tuple[tuple[bytes, bytes], ...] = ()
    own_write: int | None = None


def _check_project_segment(project: str) -> None:
    if not project.isascii():
        raise Invalid("unicode project names not allowed")


class SimpleRoutes(Base):
    _log = Logger()

    def _page_key(self, request: IRequest) -> tuple[bytes, bool, str]:
        want_json = render.wants_simple_json(header(request, b"Accept"))
        return (request.path, want_json, self._base_url(request))

    @staticmethod
    def page_group(request: IRequest) -> str | None:
        """The page cache group of a C{GET} of a C{+simple/} page; C{None} for other requests."""
        if request.method != b"GET":
            return None
        return parse_path(request.path).group

    def cached_page(self, request: IRequest, group: str | None = None) -> bytes | None:
        """
        The body of an already rendered C{+simple/} page, answered before
        routing; C{None} when the request is not for one.  C{group}: its
        L{page_group}, when the caller already has it.
        """
        if group is None:
            group = self.page_group(request)
            if group is None:
                return None
        found = self.pages.get(group, self._page_key(request))
        if found is None:
            return None
        request.setHeader(b"Vary", b"Accept, User-Agent")
        request.setHeader(b"Content-Type", found[0])
        for name, value in found[2]:
            request.setHeader(name, value)
        return found[1]

    async def _cached(self, request: IRequest, group: str, build: Callable[[bool], Awaitable[Rendered]]) -> bytes:
        key = self._page_key(request)
        request.setHeader(b"Vary", b"Accept, User-Agent")
        found = self.pages.get(group, key)
        if found is None:
            page = await build(key[1])
            headers = page.headers
            if page.stale:
                headers += (*STALE_HEADERS, (b"Expires", releases.http_date(self._clock()).encode()))
            else:
                self.pages.put(
                    group, key, page.serial, (page.content_type, page.body, headers, page.expires), page.own_write
                )
            found = (page.content_type, page.body, headers, page.expires)
        request.setHeader(b"Content-Type", found[0])
        for name, value in found[2]:
            request.setHeader(name, value)
        return found[1]

    async def _mirror_pages(
        self, stage: str, mirrors: list[tuple[str, dict[str, Any]]], project: str
    ) -> list[MirrorPage]:
        """
        Pages of the consulted mirrors; a base mirror that fails counts as
        not having the project, the index's own failure is an error.
        """
        pages: list[Any] = []
        if self._mirror is None:
            return pages
        for name, config in mirrors:
            try:
                page = await self._mirror.page(name, config, project)
            except DomainError as e:
                if name == stage:
                    raise
                self._log.warn("Mirror {mirror} skipped: {message}", mirror=name, message=e.message)
                continue
            if page is not None:
                pages.append(page)
        return pages

    # -- project lists -------------------------------------------------------

    async def _project_list(self, request: IRequest, stage: str) -> bytes:
        async def build(want_json: bool) -> Rendered:
            async def serial_and_names(tx: ITransaction) -> tuple[int, Any]:
                return tx.serial, await queries.project_names(tx, stage)

            serial, per_stage = await self._store.read(serial_and_names)
            lists: list[tuple[str, Iterable[str]]] = []
            stale = False
            expires = None
            for name, config, names in per_stage:
                if config.get("type") == "mirror" and self._mirror is not None:
                    found, was_stale = await self._mirror.project_names(name, config)
                    stale = stale or was_stale
                    until = self._clock() + self._mirror.expiry(config)
                    expires = until if expires is None else min(expires, until)
                    lists.append((name, found))
                else:
                    lists.append((name, names))
            if want_json:
                return Rendered(render.SIMPLE_JSON_TYPE, render.project_list_json(lists), serial, expires, stale)
            return Rendered(render.HTML_TYPE, render.project_list_html(stage, lists), serial, expires, stale)

        return await self._cached(request, LIST, build)

    @route("/<user>/<index>/+simple", methods=["GET"])
    async def simple_list_noslash(self, request: IRequest, user: str, index: str) -> bytes:
        accept = header(request, b"Accept")
        if render.wants_simple_json(accept) or render.is_installer(header(request, b"User-Agent")):
            return await self._project_list(request, f"{user}/{index}")
        request.setHeader(b"Vary", b"User-Agent")
        return self._redirect(request, f"/{user}/{index}/+simple/")

    @route("/<user>/<index>/+simple/", methods=["GET"])
    async def simple_list(self, request: IRequest, user: str, index: str) -> bytes:
        return await self._project_list(request, f"{user}/{index}")

    # -- project pages -----------------------------------------------------------

    @route("/<user>/<index>/+simple/<project>", methods=["GET", "POST"])
    @route("/<user>/<index>/+simple/<project>/", methods=["GET", "POST"])
    async def simple_project(self, request: IRequest, user: str, index: str, project: str) -> bytes:
        return await self._simple_page(request, f"{user}/{index}", project, "+simple/")

    async def _simple_page(self, request: IRequest, stage: str, project: str, prefix: str) -> bytes:
        _check_project_segment(project)
        normalized = normalize_name(project)
        if normalized != project and request.method == b"GET":
            return self._redirect(request, f"/{stage}/{prefix}{normalized}/")
        path = request.path.decode("utf-8", "replace")

        def href(relpath: str) -> str:
            return render.relative_url(path, "/" + quote(relpath, safe="/+@:"))

        async def build(want_json: bool) -> Rendered:
            plan = await self._store.read(lambda tx: queries.simple_plan(tx, stage, normalized))
            pages = await self._mirror_pages(stage, plan.mirrors, normalized)
            if not plan.found and not pages:
                raise NotFound(f"The project {normalized} does not exist.")
            links, versions = plan.merge(pages)
            if want_json:
                content_type, body = render.SIMPLE_JSON_TYPE, render.simple_page_json(normalized, links, versions, href)
            else:
                content_type, body = render.HTML_TYPE, render.simple_page_html(stage, normalized, links, href)
            expires = min((p.expires for p in pages), default=None)
            upstream_serial = max((p.serial for p in pages), default=-1)
            headers = ((b"X-PYPI-LAST-SERIAL", str(upstream_serial).encode()),) if upstream_serial > 0 else ()
            written = [p.written for p in pages if p.written is not None]
            own = written[0] if len(written) == 1 else None
            return Rendered(content_type, body, plan.serial, expires, any(p.stale for p in pages), headers, own)

        return await self._cached(request, normalized, build)

    @route("/<user>/<index>/+simple/<project>/refresh", methods=["POST"])
    async def simple_refresh(self, request: IRequest, user: str, index: str, project: str) -> bytes:
        stage = f"{user}/{index}"
        normalized = normalize_name(project)
        plan = await self._store.read(lambda tx: queries.simple_plan(tx, stage, normalized))
        if self._mirror is not None:
            for name, config in plan.mirrors:
                try:
                    await self._mirror.page(name, config, normalized, refresh=True)
                except DomainError as e:
                    # devpi answers 500 here; the page itself will say what is wrong
                    self._log.warn(
                        "Refresh of {project} on {mirror}: {message}",
                        project=normalized,
                        mirror=name,
                        message=e.message,
                    )
        return self._redirect(request, f"/{stage}/+simple/{normalized}/")

    # -- project and version JSON ---------------------------------------------

    async def _merged_versions(
        self, request: IRequest, stage: str, project: str, ignore_bases: bool
    ) -> tuple[dict[str, Any], bool]:
        """Versiondata by version, and whether a mirror has the project (maybe without files)."""
        url_for = self._url_for(request)
        result, mirrors = await self._store.read(
            lambda tx: queries.project_view(tx, stage, project, ignore_bases, url_for)
        )
        pages = await self._mirror_pages(stage, mirrors, project)
        for page in pages:
            for version, view in queries.mirror_versions(project, page.links, url_for).items():
                queries.add_version(result, version, view)
        return result, bool(pages)

    @route("/<user>/<index>/<project>", methods=["GET"])
    @route("/<user>/<index>/<project>/", methods=["GET"])
    async def project_get(self, request: IRequest, user: str, index: str, project: str) -> bytes:
        stage = f"{user}/{index}"
        accept = header(request, b"Accept")
        normalized = normalize_name(project)
        if render.wants_simple_json(accept) or (
            render.is_installer(header(request, b"User-Agent")) and not render.accepts_json(accept)
        ):
            return await self._simple_page(request, stage, project, "")
        if not render.accepts_json(accept):
            raise UnsupportedMediaType("unsupported media type, use Accept: application/json")
        if normalized != project:
            return self._redirect(request, f"/{stage}/{normalized}")
        result, mirrored = await self._merged_versions(request, stage, normalized, has_arg(request, b"ignore_bases"))
        if not result and not mirrored:
            raise NotFound(f"The project {normalized} does not exist.")
        return self._reply(request, "projectconfig", result)

    @route("/<user>/<index>/<project>", methods=["DELETE"])
    @route("/<user>/<index>/<project>/", methods=["DELETE"])
    async def project_delete(self, request: IRequest, user: str, index: str, project: str) -> bytes:
        stage = f"{user}/{index}"
        normalized = normalize_name(project)
        identity = await self._auth.identify(request)
        force = has_arg(request, b"force")
        await self._write(
            request,
            lambda tx: releases.delete_project(tx, stage, normalized, force, identity, self._policy),
        )
        if self._mirror is not None:
            self._mirror.forget(stage, normalized)
        return self._reply(request, message=f"project {normalized} deleted from stage {stage}")

    @route("/<user>/<index>/<project>/<version>", methods=["GET"])
    @route("/<user>/<index>/<project>/<version>/", methods=["GET"])
    async def version_get(self, request: IRequest, user: str, index: str, project: str, version: str) -> bytes:
        stage = f"{user}/{index}"
        normalized = normalize_name(project)
        if normalized != project:
            return self._redirect(request, f"/{stage}/{normalized}/{version}")
        result, _ = await self._merged_versions(request, stage, normalized, False)
        if version not in result:
            raise NotFound(f"The version {version} of project {normalized} does not exist.")
        return self._reply(request, "versiondata", result[version])

    @route("/<user>/<index>/<project>/<version>", methods=["DELETE"])
    @route("/<user>/<index>/<project>/<version>/", methods=["DELETE"])
    async def version_delete(self, request: IRequest, user: str, index: str, project: str, version: str) -> bytes:
        stage = f"{user}/{index}"
        normalized = normalize_name(project)
        identity = await self._auth.identify(request)
        force = has_arg(request, b"force")
        await self._write(
            request,
            lambda tx: releases.delete_version(tx, stage, normalized, version, force, identity, self._policy),
        )
        return self._reply(request, message=f"project {normalized!r} version {version!r} deleted")

    @route("/<user>/<index>/<project>/<version>", methods=["PATCH"])
    @route("/<user>/<index>/<project>/<version>/", methods=["PATCH"])
    async def version_patch(self, request: IRequest, user: str, index: str, project: str, version: str) -> bytes:
        """PEP 592: yank or unyank a private release."""
        identity = await self._auth.identify(request)
        return await self._yank(request, f"{user}/{index}", normalize_name(project), version, identity)

    async def _yank(self, request: IRequest, stage: str, project: str, version: str, identity: Any) -> bytes:
        body = json_body(request)
        yanked = body.get("yanked") if isinstance(body, dict) else None
        if not isinstance(yanked, (bool, str)) or set(body) != {"yanked"}:
            raise Invalid('expected {"yanked": true, false or a reason}')
        record = await self._write(
            request,
            lambda tx: releases.set_yanked(tx, stage, project, version, yanked, identity, self._policy),
        )
        return self._reply(request, "versiondata", queries.versiondata_view(record, self._url_for(request)))
