# -*- test-case-name: tests.web.test_api_packages -*-
"""
Bodies: devpi's JSON envelope and the simple pages (PEP 503 HTML, PEP 691
JSON with PEP 700, PEP 592 and PEP 658/714 fields).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from html import escape
from typing import Any

from devpi_tx.domain.queries import Link

JSON_TYPE = b"application/json"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
SIMPLE_JSON_TYPE = SIMPLE_JSON.encode()
HTML_TYPE = b"text/html; charset=utf-8"
API_VERSION = "1.1"

_INSTALLER_RE = re.compile(r"([^ ]* )*(distribute|setuptools|pip|pex|uv)/.*")


def envelope(result_type: str | None = None, result: Any = None, message: str = "") -> bytes:
    body: dict[str, Any] = {}
    if result_type is not None:
        body["type"] = result_type
        body["result"] = result
    if message:
        body["message"] = message
    return (json.dumps(body, indent=2, sort_keys=False) + "\n").encode("utf-8")


def is_installer(user_agent: str) -> bool:
    return bool(_INSTALLER_RE.match(user_agent))


def _quality(accept: str) -> dict[str, float]:
    result: dict[str, float] = {}
    for item in accept.split(","):
        parts = item.strip().split(";")
        media = parts[0].strip().lower()
        q = 1.0
        for param in parts[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media:
            result[media] = max(q, result.get(media, 0.0))
    return result


def wants_simple_json(accept: str) -> bool:
    """Content negotiation between PEP 691 JSON and HTML (HTML wins ties)."""
    if "json" not in accept:
        return False
    q = _quality(accept)

    def best(*types: str) -> float:
        return max((q[t] for t in types if t in q), default=0.0)

    json_q = best(SIMPLE_JSON, "application/vnd.pypi.simple.latest+json")
    html_q = best("text/html", "application/vnd.pypi.simple.v1+html", "*/*", "text/*")
    return json_q > 0 and json_q > html_q


def accepts_json(accept: str) -> bool:
    return "application/json" in accept


def relative_url(from_path: str, to_path: str) -> str:
    """A relative URL from the page at C{from_path} to C{to_path} (both absolute)."""
    base = from_path.split("/")[:-1]
    target = to_path.split("/")
    common = 0
    while common < min(len(base), len(target) - 1) and base[common] == target[common]:
        common += 1
    return "../" * (len(base) - common) + "/".join(target[common:])


def _yank_attr(yanked: bool | str) -> str:
    if yanked is False or yanked is None:
        return ""
    return f' data-yanked="{escape(yanked if isinstance(yanked, str) else "")}"'


def _meta_attr(value: dict[str, str] | bool) -> str:
    if isinstance(value, dict) and value:
        algo, digest = next(iter(value.items()))
        return escape(f"{algo}={digest}")
    return "true"


def simple_page_html(stage: str, project: str, links: list[Link], href: Any) -> bytes:
    out = [
        '<!DOCTYPE html><html lang="en"><head>'
        f'<meta name="pypi:repository-version" content="{API_VERSION}">'
        f"<title>{escape(stage)}: links for {escape(project)}</title></head><body>"
        f"<h1>{escape(stage)}: links for {escape(project)}</h1>\n"
    ]
    for link in links:
        attrs = ""
        if link.requires_python is not None:
            attrs += f' data-requires-python="{escape(link.requires_python)}"'
        attrs += _yank_attr(link.yanked)
        if link.core_metadata:
            value = _meta_attr(link.core_metadata)
            attrs += f' data-core-metadata="{value}" data-dist-info-metadata="{value}"'
        url = escape(href(link.relpath))
        if link.fragment:
            url += "#" + link.fragment
        out.append(f'{escape(link.stage)} <a href="{url}"{attrs}>{escape(link.basename)}</a><br>\n')
    out.append("</body></html>\n")
    return "".join(out).encode("utf-8")


def simple_page_json(project: str, links: list[Link], versions: list[str], href: Any) -> bytes:
    files = []
    for link in links:
        entry: dict[str, Any] = {
            "filename": link.basename,
            "url": href(link.relpath),
            "hashes": link.hashes,
        }
        if link.requires_python is not None:
            entry["requires-python"] = link.requires_python
        if link.yanked is not False and link.yanked is not None:
            entry["yanked"] = link.yanked
        if link.size is not None:
            entry["size"] = link.size
        if link.upload_time:
            entry["upload-time"] = link.upload_time
        if link.core_metadata:
            entry["core-metadata"] = link.core_metadata
            entry["dist-info-metadata"] = link.core_metadata
        files.append(entry)
    body = {"meta": {"api-version": API_VERSION}, "name": project, "versions": versions, "files": files}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _unique(per_stage: list[tuple[str, Iterable[str]]]) -> Iterator[tuple[str, Iterator[str]]]:
    """Per stage, its names not shown for an earlier stage (the last stage's are not recorded)."""
    seen: set[str] = set()
    last = len(per_stage) - 1

    def names(i: int, projects: Iterable[str]) -> Iterator[str]:
        for project in projects:
            if project in seen:
                continue
            if i != last:
                seen.add(project)
            yield project

    for i, (stage, projects) in enumerate(per_stage):
        yield stage, names(i, projects)


def project_list_html(stage: str, per_stage: list[tuple[str, Iterable[str]]]) -> bytes:
    out = [
        '<!DOCTYPE html><html lang="en"><head>'
        f'<meta name="pypi:repository-version" content="{API_VERSION}">'
        f"<title>{escape(stage)}: simple list (including inherited indices)</title></head><body>"
        f"<h1>{escape(stage)}: simple list (including inherited indices)</h1>"
    ]
    for name, projects in _unique(per_stage):
        out.append(f"<h2>{escape(name)}</h2>")
        out.extend(f'<a href="{p}/">{p}</a><br>\n' for p in map(escape, projects))
    out.append("</body></html>\n")
    return "".join(out).encode("utf-8")


def project_list_json(per_stage: list[tuple[str, Iterable[str]]]) -> bytes:
    parts: list[str] = []
    for _, projects in _unique(per_stage):
        parts.extend(map(json.dumps, projects))
    body = f'{{"meta":{{"api-version":"{API_VERSION}"}},"projects":['
    body += ",".join(f'{{"name":{p}}}' for p in parts) + "]}"
    return body.encode("utf-8")
