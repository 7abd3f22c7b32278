# -*- test-case-name: tests.mirror.test_simpleparse -*-
"""
Parsing upstream simple pages (PEP 503 HTML and PEP 691 JSON).  Pure.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from devpi_tx.model.names import normalize_name, project_of

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_ANCHOR_RE = re.compile(rb"<a\s[^>]*?href=[\"']([^\"']*)[\"'][^>]*>([^<]*)</a>", re.IGNORECASE)


class ParseError(Exception):
    """Upstream sent something that is not a simple page."""


@dataclass
class UpstreamLink:
    filename: str
    url: str
    hashes: dict[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    yanked: bool | str = False
    core_metadata: dict[str, str] | bool = False
    size: int | None = None
    upload_time: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v not in (None, False, {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpstreamLink:
        return cls(**data)


def _is_json(body: bytes, content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == SIMPLE_JSON or body.lstrip()[:1] == b"{"


def _load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ParseError(f"invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ParseError("JSON simple page is not an object")
    version = str(data.get("meta", {}).get("api-version", ""))
    if not version.startswith("1."):
        raise ParseError(f"unsupported api-version {version!r}")
    return data


def parse_project_list(body: bytes, content_type: str) -> list[str]:
    """Normalised project names of an upstream root page."""
    if _is_json(body, content_type):
        projects = _load_json(body).get("projects")
        if not isinstance(projects, list):
            raise ParseError("JSON project list without 'projects'")
        return [normalize_name(str(p.get("name", ""))) for p in projects if isinstance(p, dict) and p.get("name")]
    if b"<" not in body[:4096] and body.strip():
        raise ParseError("not an HTML page")
    names = []
    for href, text in _ANCHOR_RE.findall(body):
        name = unquote(href.decode("utf-8", "replace")).rstrip("/").rsplit("/", 1)[-1]
        names.append(normalize_name(name or unescape(text.decode("utf-8", "replace"))))
    return names


def strip_fragment(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    hashes: dict[str, str] = {}
    if parts.fragment and "=" in parts.fragment:
        algo, _, value = parts.fragment.partition("=")
        hashes[algo] = value
    return urlunsplit(parts._replace(fragment="")), hashes


class _LinkParser(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base = urljoin(self.base, href)
        elif tag == "a":
            found = dict(attrs)
            if found.get("href"):
                found["_base"] = self.base
                self.anchors.append(found)


def _safe(filename: str) -> bool:
    """A name that can be one path segment of a stored file."""
    return bool(filename) and not any(c in filename for c in "/\\\x00") and filename not in (".", "..")


def _belongs(filename: str, project: str) -> bool:
    found = project_of(filename)
    return found is not None and found[0] == project


def _add(links: dict[str, UpstreamLink], link: UpstreamLink) -> None:
    old = links.get(link.filename)
    if old is None or (link.hashes and not old.hashes):
        links[link.filename] = link


def parse_project_page(
    body: bytes, content_type: str, page_url: str, project: str
) -> tuple[list[UpstreamLink], list[str] | None]:
    """
    The release links of C{project} on an upstream page, and the PEP 700
    C{versions} when upstream gave them.

    @raise ParseError: the body is neither a simple page in HTML nor JSON.
    """
    links: dict[str, UpstreamLink] = {}
    if _is_json(body, content_type):
        data = _load_json(body)
        files = data.get("files")
        if not isinstance(files, list):
            raise ParseError("JSON project page without 'files'")
        for item in files:
            if not isinstance(item, dict) or not item.get("filename") or not item.get("url"):
                continue
            # upstreams that percent-quote the name in C{filename} too mean the same file
            filename = unquote(str(item["filename"]))
            if not _safe(filename) or not _belongs(filename, project):
                continue
            url, fragment = strip_fragment(urljoin(page_url, str(item["url"])))
            hashes = {str(k): str(v) for k, v in (item.get("hashes") or fragment).items()}
            meta: Any = item.get("core-metadata", item.get("dist-info-metadata", False))
            yanked: Any = item.get("yanked", False)
            size = item.get("size")
            _add(
                links,
                UpstreamLink(
                    filename=filename,
                    url=url,
                    hashes=hashes,
                    requires_python=item.get("requires-python"),
                    yanked=yanked if isinstance(yanked, (bool, str)) else bool(yanked),
                    core_metadata=meta if isinstance(meta, dict) else bool(meta),
                    size=size if isinstance(size, int) else None,
                    upload_time=item.get("upload-time") if isinstance(item.get("upload-time"), str) else None,
                ),
            )
        versions = data.get("versions")
        if isinstance(versions, list):
            return list(links.values()), [str(v) for v in versions]
        return list(links.values()), None
    if b"<" not in body[:4096] and body.strip():
        raise ParseError("not an HTML page")
    parser = _LinkParser(page_url)
    try:
        parser.feed(body.decode("utf-8", "replace"))
        parser.close()
    except Exception as e:  # html.parser is lenient; anything raised is garbage input
        raise ParseError(f"invalid HTML: {e}") from None
    for anchor in parser.anchors:
        url = urljoin(str(anchor["_base"]), str(anchor["href"]))
        if not url.startswith(("http://", "https://")):
            continue
        url, hashes = strip_fragment(url)
        # as devpi: the last segment of the unquoted path (C{%2F} cannot make a directory)
        filename = posixpath.basename(unquote(urlsplit(url).path))
        if not _safe(filename) or not _belongs(filename, project):
            continue
        yanked = False
        if "data-yanked" in anchor:
            yanked = anchor["data-yanked"] or True
        meta_attr = anchor.get("data-core-metadata", anchor.get("data-dist-info-metadata"))
        meta = False
        if meta_attr is not None:
            algo, _, value = meta_attr.partition("=")
            meta = {algo: value} if value else meta_attr != "false"
        _add(
            links,
            UpstreamLink(
                filename=filename,
                url=url,
                hashes=hashes,
                requires_python=anchor.get("data-requires-python"),
                yanked=yanked,
                core_metadata=meta,
            ),
        )
    return list(links.values()), None
