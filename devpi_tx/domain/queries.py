# -*- test-case-name: tests.web.test_api_packages,tests.web.test_api_indexes -*-
"""
Read-side views over an index and its bases: simple links, project lists,
project and version JSON (spec 1.9-1.12, 3.5, 3.6).  Functions run inside
one read L{ITransaction}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devpi_tx.domain import keys
from devpi_tx.domain.users import get_ixconfig
from devpi_tx.model.ixconfig import public_config
from devpi_tx.model.names import version_key
from devpi_tx.model.policy import mirrors_allowed, stage_resolution_order
from devpi_tx.store.interfaces import ITransaction


@dataclass(frozen=True)
class Link:
    """One file on a simple page."""

    stage: str
    basename: str
    relpath: str
    hashes: dict[str, str]
    version: str
    requires_python: str | None
    yanked: bool | str
    size: int | None
    upload_time: str | None
    core_metadata: dict[str, str] | bool | None

    @property
    def fragment(self) -> str:
        """C{algo=value} for the URL fragment: sha256 when known."""
        if "sha256" in self.hashes:
            return f"sha256={self.hashes['sha256']}"
        for algo, value in self.hashes.items():
            return f"{algo}={value}"
        return ""

    @classmethod
    def from_mirror(cls, stage: str, link: dict[str, Any]) -> Link:
        return cls(
            stage=stage,
            basename=link["filename"],
            relpath=link["relpath"],
            hashes=link.get("hashes", {}),
            version=link.get("version", ""),
            requires_python=link.get("requires_python"),
            yanked=link.get("yanked", False),
            size=link.get("size"),
            upload_time=link.get("upload_time"),
            core_metadata=link.get("core_metadata") or None,
        )


async def sro(tx: ITransaction, stage: str) -> list[tuple[str, dict[str, Any]]]:
    """C{(stage, config)} in resolution order."""
    await get_ixconfig(tx, stage)
    # the configs of every index reachable over bases, read first; the order is a pure rule
    configs: dict[str, dict[str, Any] | None] = {}
    pending = [stage]
    while pending:
        name = pending.pop()
        if name in configs:
            continue
        config = configs[name] = await tx.get(keys.index(name))
        if config:
            pending += [base for base in config.get("bases", []) if base not in configs]
    return [(name, configs[name] or {}) for name in stage_resolution_order(stage, configs.get)]


async def _stage_versions(tx: ITransaction, stage: str, project: str) -> list[tuple[str, Any]]:
    prefix = keys.version_prefix(stage, project)
    return [(k[len(prefix) :], v) for k, v in await tx.items(prefix)]


async def consulted_stages(tx: ITransaction, stage: str, project: str) -> list[tuple[str, dict[str, Any]]]:
    """The stages that contribute to C{project}, whitelist rules applied."""
    order = await sro(tx, stage)
    having = {s for s, c in order if c.get("type") != "mirror" and await tx.get(keys.project(s, project)) is not None}
    allowed = mirrors_allowed(project, order, having.__contains__)
    return [(s, c) for s, c in order if c.get("type") != "mirror" or s in allowed]


@dataclass
class Plan:
    """What a project's pages need: private links, and the mirrors to ask."""

    serial: int
    links: list[Link]
    versions: set[str]
    found: bool
    mirrors: list[tuple[str, dict[str, Any]]]

    def merge(self, pages: list[Any]) -> tuple[list[Link], list[str]]:
        """Add mirror pages (in resolution order); the first basename wins."""
        links = list(self.links)
        seen = {link.basename for link in links}
        versions = set(self.versions)
        for page in pages:
            versions.update(page.versions)
            for item in page.links:
                if item["filename"] not in seen:
                    seen.add(item["filename"])
                    links.append(Link.from_mirror(page.stage, item))
        return links, sorted(versions, key=version_key)


async def simple_plan(tx: ITransaction, stage: str, project: str) -> Plan:
    """
    The private release files of C{project} over the resolution order
    (first basename wins), and the mirrors the whitelist lets us consult.
    """
    links: list[Link] = []
    seen: set[str] = set()
    versions: set[str] = set()
    found = False
    mirrors = []
    for name, config in await consulted_stages(tx, stage, project):
        if config.get("type") == "mirror":
            mirrors.append((name, config))
            continue
        if await tx.get(keys.project(name, project)) is None:
            continue
        found = True
        for version, record in await _stage_versions(tx, name, project):
            files = [e for e in record.get("+elinks", []) if e["rel"] == "releasefile"]
            if files:
                versions.add(version)
            for e in files:
                basename = e["entrypath"].rsplit("/", 1)[1]
                if basename in seen:
                    continue
                seen.add(basename)
                meta = e.get("core_metadata")
                links.append(
                    Link(
                        stage=name,
                        basename=basename,
                        relpath=e["entrypath"],
                        hashes=e["hashes"],
                        version=version,
                        requires_python=record.get("requires_python"),
                        yanked=record.get("yanked", False),
                        size=e.get("size"),
                        upload_time=e.get("upload_time"),
                        core_metadata=meta or None,
                    )
                )
    return Plan(tx.serial, links, versions, found, mirrors)


async def project_names(tx: ITransaction, stage: str) -> list[tuple[str, dict[str, Any], list[str]]]:
    """Per stage in resolution order, its config and (private stages) project names."""
    result: list[Any] = []
    for name, config in await sro(tx, stage):
        if config.get("type") == "mirror":
            result.append((name, config, []))
            continue
        prefix = keys.project_prefix(name)
        result.append((name, config, [k[len(prefix) :] for k, _ in await tx.items(prefix)]))
    return result


async def index_view(tx: ITransaction, stage: str, with_projects: bool) -> dict[str, Any]:
    config = public_config(await get_ixconfig(tx, stage))
    if with_projects:
        mirror = config.get("type") == "mirror"
        prefix = keys.mirror_prefix(stage) if mirror else keys.project_prefix(stage)
        config["projects"] = sorted(k[len(prefix) :] for k, v in await tx.items(prefix) if v)
    return config


def _link_view(link: dict[str, Any], url_for: Callable[[str], str]) -> dict[str, Any]:
    view = {
        "rel": link["rel"],
        "hash_spec": link["hash_spec"],
        "hashes": link["hashes"],
        "href": url_for(link["entrypath"]),
        "log": link.get("_log", []),
    }
    if link.get("for_entrypath"):
        view["for_href"] = url_for(link["for_entrypath"])
    return view


def versiondata_view(record: dict[str, Any], url_for: Callable[[str], str]) -> dict[str, Any]:
    view = {k: v for k, v in record.items() if k != "+elinks"}
    view["+links"] = [_link_view(link, url_for) for link in record.get("+elinks", [])]
    return view


async def project_view(
    tx: ITransaction,
    stage: str,
    project: str,
    ignore_bases: bool,
    url_for: Callable[[str], str],
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """
    Version -> versiondata over the private stages (spec 1.11), and the
    mirrors still to merge in.
    """
    stages = [(stage, await get_ixconfig(tx, stage))] if ignore_bases else await consulted_stages(tx, stage, project)
    result: dict[str, Any] = {}
    mirrors = []
    for name, config in stages:
        if config.get("type") == "mirror":
            mirrors.append((name, config))
            continue
        if await tx.get(keys.project(name, project)) is None:
            continue
        for version, record in await _stage_versions(tx, name, project):
            add_version(result, version, versiondata_view(record, url_for))
    return result, mirrors


def add_version(result: dict[str, Any], version: str, view: dict[str, Any]) -> None:
    if version in result:
        result[version].setdefault("+shadowing", []).append(view)
    else:
        result[version] = view


def mirror_versions(project: str, links: list[dict[str, Any]], url_for: Callable[[str], str]) -> dict[str, Any]:
    """Versiondata synthesised from a mirror page (spec 5.5)."""
    result: dict[str, Any] = {}
    for link in links:
        version = link.get("version") or ""
        view = result.setdefault(version, {"name": project, "version": version, "+links": []})
        if link.get("requires_python") is not None:
            view["requires_python"] = link["requires_python"]
        if link.get("yanked"):
            view["yanked"] = link["yanked"]
        hashes = link.get("hashes", {})
        spec = next((f"{a}={v}" for a, v in hashes.items()), "")
        view["+links"].append(
            {"rel": "releasefile", "hash_spec": spec, "hashes": hashes, "href": url_for(link["relpath"])}
        )
    return result
