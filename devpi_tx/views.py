"""
Read-side views over an index and its bases: simple links, project lists,
project and version JSON (spec 1.9-1.12, 3.5, 3.6).  Functions run inside
one read L{ITransaction}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devpi_tx import keys
from devpi_tx.interfaces import ITransaction
from devpi_tx.model import mirrors_allowed, not_found, stage_resolution_order, version_key
from devpi_tx.users import get_ixconfig


@dataclass(frozen=True)
class Link:
    """One file on a simple page."""

    stage: str
    basename: str
    relpath: str
    sha256: str
    version: str
    requires_python: str | None
    yanked: bool | str
    size: int | None
    upload_time: str | None
    core_metadata: str | None


def sro(tx: ITransaction, stage: str) -> list[tuple[str, dict[str, Any]]]:
    """C{(stage, config)} in resolution order."""
    configs: dict[str, dict[str, Any] | None] = {}

    def get(name: str) -> dict[str, Any] | None:
        if name not in configs:
            configs[name] = tx.get(keys.index(name))
        return configs[name]

    get_ixconfig(tx, stage)
    return [(name, get(name) or {}) for name in stage_resolution_order(stage, get)]


def _stage_versions(tx: ITransaction, stage: str, project: str) -> list[tuple[str, Any]]:
    prefix = keys.version_prefix(stage, project)
    return [(k[len(prefix) :], v) for k, v in tx.items(prefix)]


def consulted_stages(
    tx: ITransaction, stage: str, project: str
) -> list[tuple[str, dict[str, Any]]]:
    """The stages that contribute to C{project}, whitelist rules applied."""
    order = sro(tx, stage)
    allowed = mirrors_allowed(
        project, order, lambda s: tx.get(keys.project(s, project)) is not None
    )
    return [(s, c) for s, c in order if c.get("type") != "mirror" or s in allowed]


def simple_links(tx: ITransaction, stage: str, project: str) -> tuple[list[Link], list[str]]:
    """
    The release files of C{project} over the resolution order (first
    basename wins) and the versions they belong to.

    @raise APIError: 404 when no stage has the project.
    """
    links: list[Link] = []
    seen: set[str] = set()
    versions: set[str] = set()
    found = False
    for name, config in consulted_stages(tx, stage, project):
        if config.get("type") == "mirror":
            continue
        if tx.get(keys.project(name, project)) is None:
            continue
        found = True
        for version, record in _stage_versions(tx, name, project):
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
                        sha256=e["hashes"]["sha256"],
                        version=version,
                        requires_python=record.get("requires_python"),
                        yanked=record.get("yanked", False),
                        size=e.get("size"),
                        upload_time=e.get("upload_time"),
                        core_metadata=meta["sha256"] if meta else None,
                    )
                )
    if not found:
        raise not_found(f"The project {project} does not exist.")
    return links, sorted(versions, key=version_key)


def project_names(tx: ITransaction, stage: str) -> list[tuple[str, list[str]]]:
    """Per stage in resolution order, its normalised project names."""
    result = []
    for name, config in sro(tx, stage):
        if config.get("type") == "mirror":
            result.append((name, []))
            continue
        prefix = keys.project_prefix(name)
        result.append((name, [k[len(prefix) :] for k, _ in tx.items(prefix)]))
    return result


def index_view(tx: ITransaction, stage: str, with_projects: bool) -> dict[str, Any]:
    config = get_ixconfig(tx, stage)
    if with_projects:
        prefix = keys.project_prefix(stage)
        config["projects"] = sorted(k[len(prefix) :] for k, _ in tx.items(prefix))
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


def project_view(
    tx: ITransaction,
    stage: str,
    project: str,
    ignore_bases: bool,
    url_for: Callable[[str], str],
) -> dict[str, Any]:
    """Version -> versiondata over the stages (spec 1.11)."""
    stages = [(stage, get_ixconfig(tx, stage))] if ignore_bases else consulted_stages(tx, stage, project)
    result: dict[str, Any] = {}
    found = False
    for name, config in stages:
        if config.get("type") == "mirror" or tx.get(keys.project(name, project)) is None:
            continue
        found = True
        for version, record in _stage_versions(tx, name, project):
            view = versiondata_view(record, url_for)
            if version in result:
                result[version].setdefault("+shadowing", []).append(view)
            else:
                result[version] = view
    if not found:
        raise not_found(f"The project {project} does not exist.")
    return result


def version_view(
    tx: ITransaction, stage: str, project: str, version: str, url_for: Callable[[str], str]
) -> dict[str, Any]:
    result: dict[str, Any] | None = None
    for name, config in consulted_stages(tx, stage, project):
        if config.get("type") == "mirror":
            continue
        record = tx.get(keys.version(name, project, version))
        if record is None:
            continue
        view = versiondata_view(record, url_for)
        if result is None:
            result = view
        else:
            result.setdefault("+shadowing", []).append(view)
    if result is None:
        raise not_found(f"The version {version} of project {project} does not exist.")
    return result
