# -*- test-case-name: tests.web.test_paths -*-
"""
What a request path names, parsed in one place for the answers given
before routing (cached simple pages, stored files) and for the metrics'
route labels.  Klein routes the rest by the same URL layout (spec 1.1).
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

# route names: fixed, so a request cannot add a series to /+metrics
TOP_ROUTES = frozenset({"+api", "+authcheck", "+login", "+metrics", "+search", "+status"})
ROUTES = TOP_ROUTES | {
    "root",
    "user",
    "index",
    "project",
    "version",
    "simple_list",
    "simple_project",
    "file",
    "doc",
    "other",
}
OTHER = "other"
LIST = ""
"""The page group of an index's project list."""


class RequestPath(NamedTuple):
    """
    C{route}: one of L{ROUTES}.  C{group}: the page cache group of a simple
    page (its project, or L{LIST}), for the exact C{+simple/} shapes only.
    C{relpath}: a stored file's path below the file store (C{+f}, C{+e}).
    """

    route: str
    group: str | None = None
    relpath: str | None = None


def parse_path(path: bytes) -> RequestPath:
    """What C{path} (a request's raw path) names."""
    parts = path.split(b"/")
    if len(parts) == 6 and parts[3] == b"+simple" and not parts[5]:  # the most frequent request first
        return RequestPath("simple_project", parts[4].decode("ascii", "replace"))
    if len(parts) > 1 and parts[1].startswith(b"+"):
        name = parts[1].decode("ascii", "replace")
        return RequestPath(name if name in TOP_ROUTES else OTHER)
    if len(parts) in (3, 4) and parts[-1] == b"+api":
        return RequestPath("+api")
    if len(parts) >= 4 and parts[3] == b"+simple":
        if len(parts) == 5 and not parts[4]:
            return RequestPath("simple_list", LIST)
        if len(parts) == 6 and not parts[5]:
            return RequestPath("simple_project", parts[4].decode("ascii", "replace"))
        return RequestPath("simple_list" if len(parts) <= 5 and not parts[-1] else "simple_project")
    if len(parts) >= 5 and parts[3] in (b"+f", b"+e"):
        return RequestPath("file", relpath=unquote(path[1:].decode("utf-8", "replace")))
    if len(parts) >= 4 and parts[3] in (b"+f", b"+e"):
        return RequestPath("file")
    if len(parts) >= 6 and parts[5] == b"+doc":
        return RequestPath("doc")
    if any(part.startswith(b"+") for part in parts):
        return RequestPath(OTHER)
    depth = len([p for p in parts if p])
    return RequestPath({0: "root", 1: "user", 2: "index", 3: "project", 4: "version"}.get(depth, OTHER))
