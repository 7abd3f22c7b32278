# -*- test-case-name: tests.events.test_hooks -*-
"""
What devpi-web adds to the URL space (spec 1.1): unpacked documentation
under C{/U/I/P/V/+doc/} and a search over private projects at C{/+search}.
Both read what L{devpi_tx.events.hooks} wrote.
"""

from __future__ import annotations

import os

from packaging.version import InvalidVersion, Version
from twisted.web.iweb import IRequest

from devpi_tx.events import hooks
from devpi_tx.model.errors import NotFound
from devpi_tx.model.names import normalize_name, version_key
from devpi_tx.web.common import Base, route
from devpi_tx.web.filesend import send_file

LATEST = "+latest"
STABLE = "+stable"


def docs_root(serverdir: str, user: str, index: str, project: str) -> str | None:
    """Where the unpacked docs of C{project}'s versions live, or C{None} for unsafe names."""
    if not all(map(hooks.safe_segment, (user, index, project))):
        return None
    return os.path.join(serverdir, hooks.DOCS, user, index, project)


def doc_versions(serverdir: str, user: str, index: str, project: str) -> list[str]:
    """The versions of C{project} with unpacked docs, oldest first (PEP 440)."""
    root = docs_root(serverdir, user, index, project)
    if root is None or not os.path.isdir(root):
        return []
    found = [name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name))]
    return sorted(found, key=version_key)


def is_stable(version: str) -> bool:
    try:
        return not Version(version).is_prerelease
    except InvalidVersion:
        return False


def locate_doc(serverdir: str, user: str, index: str, project: str, version: str, rest: str) -> tuple[str, bool]:
    """
    The file answering C{+doc/<rest>} and whether the client must first be
    sent to C{rest + "/"} (a directory asked for without its slash, so that
    relative links resolve).  C{version} may be C{+latest} or C{+stable}.

    @raise NotFound: for anything not found or outside the docs.
    """
    root = docs_root(serverdir, user, index, project)
    if root is None:
        raise NotFound("no such documentation")
    if version in (LATEST, STABLE):
        versions = doc_versions(serverdir, user, index, project)
        if version == STABLE:
            versions = [v for v in versions if is_stable(v)]
        if not versions:
            raise NotFound(f"no documentation for {project} on {user}/{index}")
        version = versions[-1]
    segments = rest.split("/") if rest else []
    directory = not segments or segments[-1] == ""
    if segments and directory:
        segments.pop()
    if (
        not hooks.safe_segment(version)
        or not all(map(hooks.safe_segment, segments))
        or segments[:1] == [hooks.DOCS_MARKER]
    ):
        raise NotFound("no such documentation file")
    tree = os.path.join(root, version)
    path = os.path.join(tree, *segments)
    real_tree = os.path.realpath(tree)
    real = os.path.realpath(path)
    if real != real_tree and not real.startswith(real_tree + os.sep):
        raise NotFound("no such documentation file")
    if os.path.isdir(path):
        if not directory:
            return path, True
        path = os.path.join(path, "index.html")
    if not os.path.isfile(path):
        raise NotFound(f"no documentation file {rest or 'index.html'} for {project} {version} on {user}/{index}")
    return path, False


class DocRoutes(Base):
    @route("/<user>/<index>/<project>/<version>/+doc", methods=["GET", "HEAD"])
    def docs_noslash(self, request: IRequest, user: str, index: str, project: str, version: str) -> bytes:
        _, _, query = request.uri.partition(b"?")
        return self._redirect(request, request.path + b"/", query)

    @route("/<user>/<index>/<project>/<version>/+doc/", methods=["GET", "HEAD"])
    @route("/<user>/<index>/<project>/<version>/+doc/<path:rest>", methods=["GET", "HEAD"])
    async def docs_file(
        self, request: IRequest, user: str, index: str, project: str, version: str, rest: str = ""
    ) -> bytes:
        _, _, query = request.uri.partition(b"?")
        normalized = normalize_name(project)
        if normalized != project:
            parts = request.path.split(b"/")
            parts[3] = normalized.encode()
            return self._redirect(request, b"/".join(parts), query)
        serverdir = self._config.serverdir
        path, add_slash = await self._run(locate_doc, serverdir, user, index, normalized, version, rest)
        if add_slash:
            return self._redirect(request, request.path + b"/", query)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return await send_file(request, path)

    @route("/+search", methods=["GET"])
    async def search_projects(self, request: IRequest) -> bytes:
        args: dict[bytes, list[bytes]] = request.args or {}
        query = (args.get(b"q") or [b""])[0].decode("utf-8", "replace")
        results = await self._run(self._search.search, query)
        return self._reply(request, "list:searchresult", results)
